"""The HTTP API's own schemas: what intake answers, and what people send to acknowledge and act."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from common.contracts import ActionKind, Agency
from common.reminders import REMINDER_CODE_PATTERN, own_action_of


class IncidentStatus(StrEnum):
    """Where an incident is; it only ever moves forward in this order."""

    RECEIVED = "received"
    TRIAGED = "triaged"
    ESCALATED = "escalated"
    ACKNOWLEDGED = "acknowledged"
    ACTIONS_RECORDED = "actions_recorded"
    CLOSED = "closed"


STATUS_ORDER: list[str] = [s.value for s in IncidentStatus]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class IncidentAccepted(BaseModel):
    incident_id: UUID
    reference: str = Field(examples=["OSI-7K2QFM"], description="Short reference for people; no personal data.")
    status: IncidentStatus = IncidentStatus.RECEIVED
    status_url: str = Field(examples=["/v1/incidents/6f1c0d6e-4b8a-4c3e-9a51-0f3f2d1c9b7a"])


class ActingPerson(_Request):
    """Who did it, when an integration records it for a member of staff (people's tokens say it themselves)."""

    role: str = Field(min_length=1, max_length=80, examples=["dsl"])
    name: str | None = Field(default=None, max_length=120, examples=["A. Patel"])


class AcknowledgementRequest(_Request):
    by: ActingPerson | None = Field(
        default=None, description="Required when an integration acknowledges; a person's name may be added."
    )


class ActionRequest(_Request):
    """One of the reminders the escalation carried, done."""

    action: ActionKind
    agency: Agency | None = Field(default=None, description="Required for referral_made.")
    reference_number: str | None = Field(
        default=None, min_length=1, max_length=80, description="The reference the agency gave (referral_made)."
    )
    isolated_from_network: bool | None = Field(default=None, description="Required for device_secured.")
    reason: str | None = Field(default=None, min_length=1, max_length=2000,
                               description="Required for parents_not_informed: the recorded reason not to.")
    outcome: str | None = Field(default=None, min_length=1, max_length=2000,
                                description="Required for incident_closed.")
    reminder: str | None = Field(
        default=None, pattern=REMINDER_CODE_PATTERN, examples=["initial_review_meeting"],
        description="Required for reminder_done, and only there: the code of the reminder done, one of the "
        "incident's (its status lists them). A reminder with an action of its own (a referral, the device secured, "
        "parents informed, the ICO notified) is recorded with that action instead.",
    )
    at: AwareDatetime | None = Field(default=None, description="When it was done; defaults to now.")
    by: ActingPerson | None = Field(default=None, description="Required when an integration records the action.")

    def missing_fields(self) -> list[str]:
        """The fields this kind of action needs and the request left out."""
        required = {
            ActionKind.REFERRAL_MADE: ("agency", "reference_number"),
            ActionKind.DEVICE_SECURED: ("isolated_from_network",),
            ActionKind.PARENTS_NOT_INFORMED: ("reason",),
            ActionKind.INCIDENT_CLOSED: ("outcome",),
            ActionKind.REMINDER_DONE: ("reminder",),
        }.get(self.action, ())
        return [f for f in required if getattr(self, f) is None]

    def reminder_problem(self, incident_reminders: Sequence[str] | None) -> str | None:
        """What is wrong with the reminder named, if anything; the incident's codes are None until triaged."""
        if self.reminder is None:
            return None
        if self.action is not ActionKind.REMINDER_DONE:
            return f"only reminder_done names a reminder, not {self.action.value}"
        own = own_action_of(self.reminder)
        if own is not None:
            return f"{self.reminder} is recorded with {own}, which says more than that it was done"
        if incident_reminders is not None and self.reminder not in incident_reminders:
            listed = ", ".join(incident_reminders) or "none"
            return f"{self.reminder} is not one of this incident's reminders ({listed})"
        return None


class AcknowledgementView(BaseModel):
    acknowledgement_id: UUID
    role: str
    name: str | None = None
    via: str = Field(examples=["link", "token", "integration"])
    at: datetime


class ActionView(BaseModel):
    action_id: UUID
    action: ActionKind
    role: str
    name: str | None = None
    at: datetime
    details: dict[str, Any] = Field(default_factory=dict)


class NotificationView(BaseModel):
    notification_id: str
    recipient_role: str
    level: int | None = None
    state: str = Field(examples=["requested", "delivered", "failed"])
    channel: str | None = None
    updated_at: datetime


class IncidentView(BaseModel):
    """An incident's current state. `report` omits pupil-identifying fields and the description for
    roles that do not need them."""

    incident_id: UUID
    reference: str
    school_id: str
    status: IncidentStatus
    category: str
    risk_area: str
    child_at_immediate_risk: bool
    incident_class: str | None = None
    urgency: str | None = None
    escalation_level: int | None = None
    received_at: datetime
    updated_at: datetime
    closed_at: datetime | None = None
    pupil_details_included: bool
    report: dict[str, Any]
    acknowledgements: list[AcknowledgementView]
    actions: list[ActionView]
    notifications: list[NotificationView]
