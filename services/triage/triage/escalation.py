"""Plans an incident's escalation from its classification and the school's policy; pure, with time passed in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from common.contracts import (
    IncidentTriaged,
    Reason,
    Reminder,
)
from common.incident import IncidentReport
from common.reminders import reminders_closed_by
from triage.chain import (
    EscalationCursor,
    EscalationLevel,
    FrozenChain,
    TimerOutcome,
    TimerStep,
    next_step,
    start_cursor,
)
from triage.classify import Classification
from triage.messages import NoticeContext, NotificationDraft, notices
from triage.policy import SchoolPolicy
from triage.policy_derived import PolicyDerived, derived_from

__all__ = [
    "EscalationCursor",
    "EscalationLevel",
    "EscalationPlan",
    "FrozenChain",
    "NotificationDraft",
    "TimerOutcome",
    "TimerStep",
    "next_step",
    "plan_escalation",
    "reminders_closed_by",
    "start_cursor",
]

@dataclass(frozen=True)
class EscalationPlan:
    """Everything triage decides for one incident: the frozen chain, reminders and first notices."""

    context: NoticeContext
    chain: FrozenChain
    cursor: EscalationCursor
    reminders: tuple[Reminder, ...]
    first_notices: tuple[NotificationDraft, ...]
    reasons: tuple[Reason, ...]
    stored_chain: str  # the chain as the incidents row keeps it (JSON)
    chain_contract: tuple[dict[str, Any], ...]  # the chain as `incidents.triaged` carries it

    def notices_for(self, step: TimerStep) -> tuple[NotificationDraft, ...]:
        """The notices a timer step sends (none unless it escalated or repeated)."""
        return notices(self.context, step.cursor.level, step.notify, step.reason)

    @cached_property
    def stored_context(self) -> str:
        """The notice context as the incidents row keeps it (JSON)."""
        return self.context.model_dump_json()

    def triaged_data(self, *, incident_id: str, reference: str) -> dict[str, Any]:
        """`triaged(...).model_dump(mode="json")`: validated once per plan, then only the incident's id and
        reference (plain strings) put in."""
        return {**self._triaged_template, "incident_id": incident_id, "reference": reference}

    @cached_property
    def _triaged_template(self) -> dict[str, Any]:
        return self.triaged(incident_id="", reference="").model_dump(mode="json")

    def triaged(self, *, incident_id: str, reference: str) -> IncidentTriaged:
        return IncidentTriaged(
            incident_id=incident_id,
            reference=reference,
            incident_class=self.context.incident_class,
            urgency=self.context.urgency,
            risk_area=self.context.risk_area,
            reasons=list(self.reasons),
            reminders=list(self.reminders),
            policy_version=self.chain.policy_version,
            chain=list(self.chain_contract),
        )


def plan_escalation(
    report: IncidentReport, classification: Classification, policy: SchoolPolicy, now: datetime,
    *, reported_at: datetime | None = None,
) -> EscalationPlan:
    """Freeze the chain, date the reminders and draft the first notices for a classified report. The chain's
    timeouts run from `now`, when its first people are told; the reminders' deadlines (LADO within a working
    day, ICO within 72 hours) run from `reported_at`, when the school reported it, so that triage or the broker
    being down for a while does not push them back. What depends only on the policy (chains, contacts, reminder
    texts) is derived once per policy (`triage.policy_derived`), and reports of one school classed alike at the
    same instant (`now`, the very object) and reported in the same second share one plan."""
    derived = derived_from(policy)
    memo = derived.memo_at(now)
    reported_at = reporting_second(reported_at, now)
    key = ("plan", report.school_id, classification, reported_at)
    found = memo.get(key)
    if isinstance(found, EscalationPlan):
        return found
    plan = _plan(report, classification, policy, now, reported_at, derived)
    memo[key] = plan
    return plan


def reporting_second(reported_at: datetime | None, now: datetime) -> datetime:
    """When the deadlines start: the report's time, never later than `now` (a clock ahead of ours), truncated to
    the second, which makes a deadline at most a second early and lets a second's reports share a plan."""
    if reported_at is None or reported_at > now:
        return now
    return reported_at.replace(microsecond=0)


def _plan(report: IncidentReport, classification: Classification, policy: SchoolPolicy, now: datetime,
          reported_at: datetime, derived: PolicyDerived) -> EscalationPlan:
    standing_aside = classification.roles_standing_aside
    chosen = derived.chosen(classification.incident_class, classification.circumstances, standing_aside)
    chain = chosen.chain
    at_once = classification.child_at_immediate_risk
    reminders = tuple(
        Reminder(
            code=t.code, text=t.text, owner_role=t.owner_role,
            due_at=t.due.due_at(reported_at, policy.working_hours) if t.due else None,
        )
        for t in derived.reminders(classification.incident_class, classification.reminder_codes, standing_aside)
    )
    reasons = (*classification.reasons, *chosen.reasons)
    context = NoticeContext(
        school_id=report.school_id,
        school_name=policy.school_name,
        timezone=policy.working_hours.timezone,
        incident_class=classification.incident_class,
        urgency=classification.urgency,
        risk_area=classification.risk_area,
        reasons=reasons,
        reminders=reminders,
    )
    told = chain.levels if at_once else chain.levels[:1]
    reason = "a child is at immediate risk: the whole chain is told at once" if at_once else "first notice"
    first = tuple(n for level in told for n in notices(context, level.level, level.recipients, reason))
    return EscalationPlan(
        context=context,
        chain=chain,
        cursor=start_cursor(chain, now, whole_chain_at_once=at_once),
        reminders=reminders,
        first_notices=first,
        reasons=reasons,
        stored_chain=chosen.stored_json,
        chain_contract=chosen.contract,
    )
