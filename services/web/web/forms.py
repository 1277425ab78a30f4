"""The action forms of an incident page: which form each reminder gets, and what a filled-in form means
(pure: a form's fields in, intake's action body or errors in words out)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from common.contracts import Agency
from common.reminders import REMINDER_CODE_PATTERN, own_action_of

AGENCY_LABELS = {
    "police": "Police", "ceop": "CEOP (National Crime Agency)", "iwf": "Internet Watch Foundation (IWF)",
    "lado": "Designated Officer (LADO)", "childrens_social_care": "Children's social care", "prevent": "Prevent",
    "report_remove": "Report Remove (Childline and the IWF)", "filtering_provider": "Filtering provider",
    "data_protection_officer": "Data protection officer",
}
REFERRAL_CHOICES = ("police", "ceop", "iwf", "lado", "childrens_social_care")
FORM_TITLES = {
    "referral": "Referral made", "device": "Device secured", "parents": "Parents informed",
    "ico": "ICO notified", "done": "Reminder done", "close": "Close the incident",
}
_MAX_TEXT = 2000
_REMINDER_CODE = re.compile(REMINDER_CODE_PATTERN)
_MAX_REFERENCE = 80


def form_for(code: str, *, has_due_time: bool) -> tuple[str, tuple[str, ...]] | None:
    """The form a reminder gets, with the agencies it offers: its own action's, or 'done' for any other reminder
    with a due time (common.reminders); None for a standing instruction, which holds until the incident closes."""
    if code == "refer_at_once":
        return "referral", ("police", "childrens_social_care")
    if code == "refer_lado_at_once":
        return "referral", ("lado",)
    if code.startswith("refer_") and code.removeprefix("refer_") in AGENCY_LABELS:
        return "referral", (code.removeprefix("refer_"),)
    own = {
        "secure_and_isolate_device": ("device", ()),
        "inform_parents": ("parents", ()),
        "notify_ico": ("ico", ()),
    }.get(code)
    if own is not None:
        return own
    return ("done", ()) if has_due_time and own_action_of(code) is None else None


@dataclass
class Checked:
    """A form's outcome: the body for intake, or what is wrong, by field, in words."""

    body: dict[str, Any] | None = None
    errors: dict[str, str] = field(default_factory=dict)


def _text(values: dict[str, str], name: str) -> str:
    return (values.get(name) or "").strip()


def check_action(kind: str, values: dict[str, str], agencies: tuple[str, ...] = REFERRAL_CHOICES) -> Checked:
    errors: dict[str, str] = {}
    body: dict[str, Any]
    if kind == "referral":
        agency, reference = _text(values, "agency"), _text(values, "reference_number")
        if agency not in agencies or agency not in {a.value for a in Agency}:
            errors["agency"] = "Select who the referral was made to"
        if not reference:
            errors["reference_number"] = "Enter the reference number the agency gave you"
        elif len(reference) > _MAX_REFERENCE:
            errors["reference_number"] = f"Reference number must be {_MAX_REFERENCE} characters or fewer"
        body = {"action": "referral_made", "agency": agency, "reference_number": reference}
    elif kind == "device":
        isolated = _text(values, "isolated_from_network")
        if isolated not in ("yes", "no"):
            errors["isolated_from_network"] = "Select whether the device is isolated from the network"
        body = {"action": "device_secured", "isolated_from_network": isolated == "yes"}
    elif kind == "parents":
        informed, reason = _text(values, "informed"), _text(values, "reason")
        if informed not in ("yes", "no"):
            errors["informed"] = "Select whether the parents have been informed"
        if informed == "no" and not reason:
            errors["reason"] = "Enter the reason the parents have not been informed"
        elif len(reason) > _MAX_TEXT:
            errors["reason"] = f"Reason must be {_MAX_TEXT} characters or fewer"
        body = ({"action": "parents_informed"} if informed == "yes"
                else {"action": "parents_not_informed", "reason": reason})
    elif kind == "ico":
        reference = _text(values, "reference_number")
        if len(reference) > _MAX_REFERENCE:
            errors["reference_number"] = f"Reference number must be {_MAX_REFERENCE} characters or fewer"
        body = {"action": "ico_notified", **({"reference_number": reference} if reference else {})}
    elif kind == "done":
        reminder = _text(values, "reminder")
        if not _REMINDER_CODE.fullmatch(reminder) or own_action_of(reminder) is not None:
            return Checked(errors={"form": "This reminder is not one we know; reload the page and try again"})
        body = {"action": "reminder_done", "reminder": reminder}
    elif kind == "close":
        outcome = _text(values, "outcome")
        if not outcome:
            errors["outcome"] = "Enter the outcome of the incident"
        elif len(outcome) > _MAX_TEXT:
            errors["outcome"] = f"Outcome must be {_MAX_TEXT} characters or fewer"
        body = {"action": "incident_closed", "outcome": outcome}
    else:
        return Checked(errors={"form": "This form is not one we know; reload the page and try again"})
    return Checked(None, errors) if errors else Checked(body)
