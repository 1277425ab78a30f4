"""The words of an escalation notice. Built only from the classification and policy, never the report text."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from common.contracts import (
    IncidentClass,
    NoticePurpose,
    NotificationRequested,
    Reason,
    Recipient,
    Reminder,
    Urgency,
)
from common.incident import RiskArea

CLASS_LABELS: dict[IncidentClass, str] = {
    IncidentClass.ILLEGAL: "Illegal content or activity",
    IncidentClass.YOUTH_PRODUCED_SEXUAL_IMAGERY: "Youth-produced sexual imagery",
    IncidentClass.ALLEGATION_ABOUT_STAFF: "Allegation about a member of staff",
    IncidentClass.INAPPROPRIATE: "Inappropriate (legal) content or conduct",
    IncidentClass.SECURITY: "Security",
}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoticeContext(_Frozen):
    """What every notice about one incident says, whoever receives it."""

    school_id: str
    school_name: str
    timezone: str
    incident_class: IncidentClass
    urgency: Urgency
    risk_area: RiskArea
    reasons: tuple[Reason, ...]
    reminders: tuple[Reminder, ...]


@dataclass(frozen=True)
class NotificationDraft:
    """A notice for one recipient, ready to become a `NotificationRequested` once ids are known. Its words
    (`headline`, `body`) are rendered only when asked for: the request that leaves triage does not carry them."""

    context: NoticeContext
    level: int
    recipient: Recipient
    reason: str
    reminders: tuple[Reminder, ...]
    purpose: NoticePurpose = NoticePurpose.ESCALATION

    @property
    def school_id(self) -> str:
        return self.context.school_id

    @property
    def school_name(self) -> str:
        return self.context.school_name

    @property
    def incident_class(self) -> IncidentClass:
        return self.context.incident_class

    @property
    def urgency(self) -> Urgency:
        return self.context.urgency

    @property
    def headline(self) -> str:
        return headline(self.context)

    @property
    def body(self) -> tuple[str, ...]:
        return body(self.context, self.reason)

    def request_data(
        self, *, notification_id: str, incident_id: str, reference: str, generation: int
    ) -> dict[str, Any]:
        """`to_request(...).model_dump(mode="json")`: the request validated once per draft, then only its ids
        (plain strings and a number, which the contract does not constrain further) put in."""
        return {**self._request_template, "notification_id": notification_id, "incident_id": incident_id,
                "reference": reference, "generation": generation}

    @cached_property
    def _request_template(self) -> dict[str, Any]:
        return self.to_request(notification_id="", incident_id="", reference="", generation=0).model_dump(mode="json")

    def to_request(
        self, *, notification_id: str, incident_id: str, reference: str, generation: int
    ) -> NotificationRequested:
        context = self.context
        return NotificationRequested(
            notification_id=notification_id,
            incident_id=incident_id,
            reference=reference,
            school_id=context.school_id,
            school_name=context.school_name,
            incident_class=context.incident_class,
            urgency=context.urgency,
            level=self.level,
            generation=generation,
            recipient=self.recipient,
            reminders=list(self.reminders),
            reason=self.reason,
            purpose=self.purpose,
        )


def notices(
    context: NoticeContext, level: int, recipients: tuple[Recipient, ...], reason: str
) -> tuple[NotificationDraft, ...]:
    return tuple(NotificationDraft(context, level, recipient, reason, context.reminders) for recipient in recipients)


def headline(context: NoticeContext) -> str:
    """The subject line: class, urgency and school only (seed 003: no child's name or DOB in a subject)."""
    label = CLASS_LABELS[context.incident_class]
    return f"{context.urgency.value.upper()}: {label} incident at {context.school_name}"


def body(context: NoticeContext, reason: str) -> tuple[str, ...]:
    label = CLASS_LABELS[context.incident_class]
    zone = ZoneInfo(context.timezone)
    lines = [
        f"An online-safety incident at {context.school_name} has been classed as: {label}.",
        f"Risk area: {context.risk_area.value}. Urgency: {context.urgency.value}.",
        f"You are told because: {reason}.",
        "Why it was classed so:",
        *(f"- {r.explanation} [{r.rule}]" for r in context.reasons),
        "What must be done:",
        *(f"- {m.text} ({_role_words(m.owner_role)}, {_due_words(m.due_at, zone)})" for m in context.reminders),
        "The details of the report are in the school's safeguarding record, not in this message.",
        "Acknowledge with the link in this message: it opens a page with one button.",
    ]
    return tuple(lines)


def _role_words(role: str) -> str:
    return "DSL" if role == "dsl" else "deputy DSL" if role == "deputy_dsl" else role.replace("_", " ")


def _due_words(due_at: datetime | None, zone: ZoneInfo) -> str:
    if due_at is None:
        return "throughout"
    return "due " + due_at.astimezone(zone).strftime("%a %d %b %Y %H:%M")
