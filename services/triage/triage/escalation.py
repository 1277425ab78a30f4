"""Plans an incident's escalation from its classification and the school's policy; pure, with time passed in."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict

from common.contracts import (
    ActionKind,
    Agency,
    ChannelAddress,
    IncidentTriaged,
    Reason,
    Recipient,
    Reminder,
)
from common.incident import IncidentReport
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
from triage.policy import Chain, SchoolPolicy

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

# A referral to an agency closes its own reminder; police or social care also close 'refer at once'.
_REFERRAL_ALSO_CLOSES: dict[Agency, frozenset[str]] = {
    Agency.POLICE: frozenset({"refer_at_once"}),
    Agency.CHILDRENS_SOCIAL_CARE: frozenset({"refer_at_once"}),
}
_ACTION_CLOSES: dict[ActionKind, frozenset[str]] = {
    ActionKind.DEVICE_SECURED: frozenset({"secure_and_isolate_device"}),
    ActionKind.PARENTS_INFORMED: frozenset({"inform_parents"}),
    ActionKind.PARENTS_NOT_INFORMED: frozenset({"inform_parents"}),
    ActionKind.ICO_NOTIFIED: frozenset({"notify_ico"}),
}


class EscalationPlan(BaseModel):
    """Everything triage decides for one incident: the frozen chain, reminders and first notices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    context: NoticeContext
    chain: FrozenChain
    cursor: EscalationCursor
    reminders: tuple[Reminder, ...]
    first_notices: tuple[NotificationDraft, ...]
    reasons: tuple[Reason, ...]

    def notices_for(self, step: TimerStep) -> tuple[NotificationDraft, ...]:
        """The notices a timer step sends (none unless it escalated or repeated)."""
        return notices(self.context, step.cursor.level, step.notify, step.reason)

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
            chain=self.chain.as_contract(),
        )


def plan_escalation(
    report: IncidentReport, classification: Classification, policy: SchoolPolicy, now: datetime
) -> EscalationPlan:
    """Freeze the chain, date the reminders and draft the first notices for a classified report."""
    chain_policy, chain_reasons = _choose_chain(classification, policy)
    chain, stand_in_reasons = _freeze(chain_policy, policy, classification.roles_standing_aside)
    at_once = classification.child_at_immediate_risk
    context = NoticeContext(
        school_id=report.school_id,
        school_name=policy.school_name,
        timezone=policy.working_hours.timezone,
        incident_class=classification.incident_class,
        urgency=classification.urgency,
        risk_area=classification.risk_area,
        reasons=(*classification.reasons, *chain_reasons, *stand_in_reasons),
        reminders=_reminders(classification, policy, now),
    )
    told = chain.levels if at_once else chain.levels[:1]
    reason = "a child is at immediate risk: the whole chain is told at once" if at_once else "first notice"
    first = tuple(n for level in told for n in notices(context, level.level, level.recipients, reason))
    return EscalationPlan(
        context=context,
        chain=chain,
        cursor=start_cursor(chain, now, whole_chain_at_once=at_once),
        reminders=context.reminders,
        first_notices=first,
        reasons=context.reasons,
    )


def _choose_chain(classification: Classification, policy: SchoolPolicy) -> tuple[Chain, list[Reason]]:
    chain = policy.chain_for(classification.incident_class, classification.circumstances)
    when = getattr(chain, "when", None)
    if when is None:
        return chain, []
    explanation = f"The school's policy has its own chain for this circumstance ({when.replace('_', ' ')})."
    return chain, [Reason(rule=f"policy.special-chain.{when}", explanation=explanation)]


def _freeze(chain: Chain, policy: SchoolPolicy, standing_aside: tuple[str, ...]) -> tuple[FrozenChain, list[Reason]]:
    """Copy the chain with its contacts; a role standing aside gives way to its stand-in; nobody twice."""
    reasons = [
        Reason(
            rule=f"policy.stand-in.{role}",
            explanation=f"The {role.replace('_', ' ')} is the subject, so is not told; "
            f"{(_acting_role(role, standing_aside, policy) or 'nobody').replace('_', ' ')} acts instead.",
        )
        for role in standing_aside
    ]
    levels: list[EscalationLevel] = []
    told: set[str] = set()
    for level in chain.levels:
        roles = [_acting_role(role, standing_aside, policy) for role in level.roles]
        fresh = [r for r in dict.fromkeys(roles) if r is not None and r not in told]
        told.update(fresh)
        if fresh:
            recipients = tuple(_recipient(role, policy) for role in fresh)
            levels.append(EscalationLevel(level=len(levels), recipients=recipients, ack_timeout=level.ack_timeout))
    if not levels:  # Nobody left: better to tell the chain as written than to tell nobody.
        return _freeze(chain, policy, ())[0], [Reason(rule="policy.no-stand-in", explanation=_NO_STAND_IN)]
    frozen = FrozenChain(
        levels=tuple(levels),
        repeat_every=_minutes(chain.repeat_every_minutes),
        max_repeats=chain.max_repeats,
        policy_version=policy.version,
    )
    return frozen, reasons


_NO_STAND_IN = "Everyone in the chain is a subject and the policy names no stand-in; the chain is told as written."


def _acting_role(role: str, standing_aside: tuple[str, ...], policy: SchoolPolicy) -> str | None:
    seen: set[str] = set()
    while role in standing_aside:
        if role in seen or role not in policy.stand_ins:
            return None
        seen.add(role)
        role = policy.stand_ins[role]
    return role


def _recipient(role: str, policy: SchoolPolicy) -> Recipient:
    contact = policy.contacts[role]
    channels = [ChannelAddress(kind=c.kind, address=c.address) for c in contact.channels]
    return Recipient(role=role, name=contact.name, channels=channels)


def _reminders(classification: Classification, policy: SchoolPolicy, now: datetime) -> tuple[Reminder, ...]:
    codes = dict.fromkeys([*policy.reminder_codes_for(classification.incident_class), *classification.reminder_codes])
    reminders = []
    for code in codes:
        definition = policy.reminders[code]
        owner = _acting_role(definition.owner, classification.roles_standing_aside, policy) or definition.owner
        due_at = definition.due.due_at(now, policy.working_hours) if definition.due else None
        reminders.append(Reminder(code=code, text=definition.text, owner_role=owner, due_at=due_at))
    return tuple(reminders)


def _minutes(count: int) -> timedelta:
    return timedelta(minutes=count)


def reminders_closed_by(action: ActionKind, agency: Agency | None, open_reminders: Iterable[str] = ()) -> set[str]:
    """The reminder codes a recorded action closes. INCIDENT_CLOSED closes every open reminder given."""
    if action is ActionKind.INCIDENT_CLOSED:
        return set(open_reminders)
    if action is ActionKind.REFERRAL_MADE:
        if agency is None:
            return set()
        return {f"refer_{agency.value}", *_REFERRAL_ALSO_CLOSES.get(agency, frozenset())}
    return set(_ACTION_CLOSES.get(action, frozenset()))
