"""The DSL's desk as data: open incidents most urgent first, who was told and who acknowledged, and which
reminders are still open or overdue (pure functions over audit's incident states)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common.contracts import ActionKind, Agency
from common.reminders import reminders_closed_by

URGENCY_ORDER = {"immediate": 0, "high": 1, "normal": 2, "low": 3}
CLASS_LABELS = {
    "illegal": "Illegal content",
    "youth_produced_sexual_imagery": "Youth-produced sexual imagery",
    "allegation_about_staff": "Allegation about staff",
    "inappropriate": "Inappropriate (legal) content",
    "security": "Security",
}
ROLE_LABELS = {
    "dsl": "DSL", "deputy_dsl": "Deputy DSL", "headteacher": "Headteacher",
    "deputy_headteacher": "Deputy headteacher", "chair_of_governors": "Chair of governors",
    "safeguarding_governor": "Safeguarding governor", "governor": "Governor",
    "online_safety_coordinator": "Online-safety coordinator", "it_technician": "IT technician",
    "it_support_provider": "IT support provider", "data_protection_officer": "Data protection officer",
}


def when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def role_label(role: str | None) -> str:
    return ROLE_LABELS.get(role or "", (role or "unknown").replace("_", " ").capitalize())


def class_label(incident_class: str | None) -> str:
    return CLASS_LABELS.get(incident_class or "", "Not yet classed")


def age(since: datetime | None, now: datetime) -> str:
    """'3 days 2 hours', '45 minutes': time since report in words."""
    if since is None:
        return "unknown"
    minutes = max(0, int((now - since).total_seconds() // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = [(days, "day"), (hours, "hour")] if days else [(hours, "hour"), (mins, "minute")]
    words = [f"{n} {unit}{'' if n == 1 else 's'}" for n, unit in parts if n]
    return " ".join(words) or "less than a minute"


@dataclass(frozen=True)
class OpenReminder:
    code: str
    owner_role: str
    due_at: datetime | None
    overdue: bool


def open_reminders(state: dict[str, Any], now: datetime) -> list[OpenReminder]:
    """The incident's reminders that no recorded action has closed yet (the same rule triage applies)."""
    codes = [r["code"] for r in state.get("reminders", []) if r.get("code")]
    closed: set[str] = set()
    for action in state.get("actions", []):
        try:
            kind = ActionKind(action.get("action"))
            agency = Agency(action["agency"]) if action.get("agency") else None
        except ValueError:
            continue
        closed |= reminders_closed_by(kind, agency, codes, action.get("reminder"))
    result = []
    for r in state.get("reminders", []):
        if not r.get("code") or r["code"] in closed:
            continue
        due = when(r.get("due_at"))
        result.append(OpenReminder(r["code"], r.get("owner_role") or "", due, due is not None and due < now))
    return result


@dataclass(frozen=True)
class DeskRow:
    incident_id: str
    reference: str
    incident_class: str
    urgency: str
    reported_at: datetime | None
    since_report: str
    told: list[str]
    acknowledged: list[str]
    reminders: list[OpenReminder]

    @property
    def overdue(self) -> int:
        return sum(1 for r in self.reminders if r.overdue)


def desk_rows(states: list[dict[str, Any]], now: datetime) -> list[DeskRow]:
    rows = []
    for s in states:
        if s.get("status") == "closed":
            continue
        told = sorted({role_label(n.get("role")) for n in s.get("notifications", [])})
        acked = [f"{role_label(a.get('role'))}{' (' + a['name'] + ')' if a.get('name') else ''}"
                 for a in s.get("acknowledgements", [])]
        reported = when(s.get("reported_at"))
        rows.append(DeskRow(
            s["incident_id"], s.get("reference") or "pending", class_label(s.get("incident_class")),
            s.get("urgency") or "not yet triaged", reported, age(reported, now), told, acked,
            open_reminders(s, now),
        ))
    return sorted(rows, key=lambda r: (URGENCY_ORDER.get(r.urgency, 9),
                                       r.reported_at.timestamp() if r.reported_at else 0.0))
