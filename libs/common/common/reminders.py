"""Which recorded action closes which reminder: one rule, applied by triage (which stops chasing), intake (which
refuses an action that cannot close anything), the web desk and audit's reports (which show what is still open).

A reminder with its own action is closed by it: a referral (with the agency and the reference it gave), the device
secured, parents informed or the reason not to, the ICO notified. Any other reminder with a due time (the initial
review meeting, the account reset, ...) is closed by `reminder_done` naming it. Closing the incident closes them all.
A reminder without a due time is a standing instruction ("do not investigate alone"): never overdue, never closed.
"""

from __future__ import annotations

from collections.abc import Iterable

from common.contracts import ActionKind, Agency

# What a reminder's code looks like where people send one (intake's `reminder_done`, the desk's form).
REMINDER_CODE_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"

# A referral to an agency closes its own reminder; police or social care also close 'refer at once'.
_REFERRAL_ALSO_CLOSES: dict[Agency, frozenset[str]] = {
    Agency.POLICE: frozenset({"refer_at_once"}),
    Agency.CHILDRENS_SOCIAL_CARE: frozenset({"refer_at_once"}),
    Agency.LADO: frozenset({"refer_lado_at_once"}),
}
_ACTION_CLOSES: dict[ActionKind, frozenset[str]] = {
    ActionKind.DEVICE_SECURED: frozenset({"secure_and_isolate_device"}),
    ActionKind.PARENTS_INFORMED: frozenset({"inform_parents"}),
    ActionKind.PARENTS_NOT_INFORMED: frozenset({"inform_parents"}),
    ActionKind.ICO_NOTIFIED: frozenset({"notify_ico"}),
}


def reminders_closed_by(
    action: ActionKind, agency: Agency | None, open_reminders: Iterable[str] = (), reminder: str | None = None
) -> set[str]:
    """The reminder codes a recorded action closes. INCIDENT_CLOSED closes every open reminder given;
    REMINDER_DONE the one it names, unless that one has its own action (which records more than 'done')."""
    if action is ActionKind.INCIDENT_CLOSED:
        return set(open_reminders)
    if action is ActionKind.REMINDER_DONE:
        return {reminder} if reminder is not None and own_action_of(reminder) is None else set()
    if action is ActionKind.REFERRAL_MADE:
        if agency is None:
            return set()
        return {f"refer_{agency.value}", *_REFERRAL_ALSO_CLOSES.get(agency, frozenset())}
    return set(_ACTION_CLOSES.get(action, frozenset()))


def own_action_of(code: str) -> str | None:
    """The action that records this reminder done, in words for an error message ('referral_made with agency
    police or childrens_social_care'); None when `reminder_done` does."""
    agencies = [a.value for a in Agency if code in reminders_closed_by(ActionKind.REFERRAL_MADE, a)]
    if agencies:
        return f"{ActionKind.REFERRAL_MADE.value} with agency {' or '.join(agencies)}"
    actions = [a.value for a, codes in _ACTION_CLOSES.items() if code in codes]
    return " or ".join(actions) if actions else None
