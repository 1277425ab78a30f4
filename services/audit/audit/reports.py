"""Queries over the log: timelines, search and the termly report (pure functions over events)."""

from __future__ import annotations

import csv
import io
import math
from datetime import datetime
from typing import Any

from audit.projection import State, incident_id_of
from common.incident import action_for_every_reader, without_pupil_identifiers

_ALWAYS_HIDDEN = frozenset({"date_of_birth", "dob", "pupil_name", "identifier", "description"})


def redact(value: Any) -> Any:
    """What a governor may see of an event: no pupil-identifying fields, no free text, no raw values."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k in _ALWAYS_HIDDEN or k == "value_b64":
                continue
            if k == "report" and isinstance(v, dict):
                out[k] = redact(without_pupil_identifiers(v))
            elif k == "subjects" and isinstance(v, list):
                out[k] = [redact(without_pupil_identifiers({"subjects": [s]})["subjects"][0])
                          if isinstance(s, dict) else s for s in v]
            else:
                out[k] = redact(v)
        return out
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _summary(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data") or {}
    kind = str(event.get("type", event.get("kind", "")))
    if kind.endswith("notification.requested.v1"):
        recipient = data.get("recipient") or {}
        return {"told": recipient.get("role"), "name": recipient.get("name"),
                "channels": [c.get("kind") for c in recipient.get("channels", [])],
                "level": data.get("level"), "reason": data.get("reason")}
    if kind.endswith("notification.delivered.v1"):
        return {"told": data.get("recipient_role"), "channel": data.get("channel"), "delivered_at": event.get("time")}
    if kind.endswith("notification.failed.v1"):
        return {"told": data.get("recipient_role"), "failed": len(data.get("errors", []))}
    if kind.endswith("incident.acknowledged.v1"):
        by = data.get("by") or {}
        return {"acknowledged_by": by.get("role"), "name": by.get("name"), "at": data.get("at"), "via": data.get("via")}
    if kind.endswith("incident.escalated.v1"):
        return {"from_level": data.get("from_level"), "to_level": data.get("to_level"), "reason": data.get("reason")}
    if kind.endswith("incident.action-recorded.v1"):
        return {"action": data.get("action"), "agency": data.get("agency"), "at": data.get("at")}
    if kind.endswith("incident.triaged.v1"):
        return {"class": data.get("incident_class"), "urgency": data.get("urgency"), "risk_area": data.get("risk_area")}
    if kind.endswith("incident.reported.v1"):
        report = data.get("report") or {}
        return {"reference": data.get("reference"), "category": report.get("category"),
                "risk_area": report.get("risk_area")}
    return {}


def redact_event(event: dict[str, Any]) -> dict[str, Any]:
    """What a governor may see of a logged event: `redact`, and of a recorded action only what intake shows every
    reader (no reason, outcome or crime reference: common.incident.action_for_every_reader)."""
    data = event.get("data")
    if str(event.get("type", "")).endswith("incident.action-recorded.v1") and isinstance(data, dict):
        event = {**event, "data": action_for_every_reader(data)}
    shown: dict[str, Any] = redact(event)
    return shown


def timeline_entry(seq: int, topic: str, recorded_at: datetime, event: dict[str, Any], *, full: bool
                   ) -> dict[str, Any]:
    shown = event if full else redact_event(event)
    return {
        "seq": seq, "recorded_at": recorded_at.isoformat(), "topic": topic,
        "type": event.get("type", event.get("kind")), "time": event.get("time"),
        "summary": _summary(event) if full else redact(_summary(event)), "event": shown,
    }


def belongs_to(event: dict[str, Any], incident_id: str) -> bool:
    if incident_id_of(event) == incident_id:
        return True
    inner = event.get("event")  # a dead letter of one of the incident's events
    return isinstance(inner, dict) and incident_id_of(inner) == incident_id


def _in_period(at: str | None, start: datetime | None, end: datetime | None) -> bool:
    if at is None:
        return start is None and end is None
    when = datetime.fromisoformat(at.replace("Z", "+00:00"))
    return (start is None or when >= start) and (end is None or when < end)


def search(states: dict[str, State], *, start: datetime | None = None, end: datetime | None = None,
           incident_class: str | None = None, risk_area: str | None = None, status: str | None = None
           ) -> list[State]:
    found = [
        s for s in states.values()
        if _in_period(s["reported_at"], start, end)
        and (incident_class is None or s["incident_class"] == incident_class)
        and (risk_area is None or s["risk_area"] == risk_area)
        and (status is None or s["status"] == status)
    ]
    return sorted(found, key=lambda s: (s["reported_at"] or "", s["incident_id"]))


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def termly_report(states: list[State], start: datetime | None, end: datetime | None) -> dict[str, Any]:
    by_class: dict[str, int] = {}
    by_risk: dict[str, int] = {}
    by_agency: dict[str, int] = {}
    ack_seconds: list[float] = []
    escalations = overdue = referrals = 0
    for s in states:
        by_class[s["incident_class"] or "untriaged"] = by_class.get(s["incident_class"] or "untriaged", 0) + 1
        by_risk[s["risk_area"] or "unknown"] = by_risk.get(s["risk_area"] or "unknown", 0) + 1
        if s["first_acknowledged_at"] and s["reported_at"]:
            acked = datetime.fromisoformat(s["first_acknowledged_at"].replace("Z", "+00:00"))
            reported = datetime.fromisoformat(s["reported_at"].replace("Z", "+00:00"))
            ack_seconds.append((acked - reported).total_seconds())
        escalations += s["escalations"]
        overdue += s["overdue_reminders"]
        referrals += len(s["referrals"])
        for r in s["referrals"]:
            by_agency[r["agency"] or "unspecified"] = by_agency.get(r["agency"] or "unspecified", 0) + 1
    return {
        "period": {"from": start.isoformat() if start else None, "to": end.isoformat() if end else None},
        "incidents": len(states),
        "by_class": dict(sorted(by_class.items())),
        "by_risk_area": dict(sorted(by_risk.items())),
        "time_to_first_acknowledgement_seconds": {
            "acknowledged": len(ack_seconds), "p50": percentile(ack_seconds, 50), "p90": percentile(ack_seconds, 90),
        },
        "escalations": escalations,
        "overdue_reminders": overdue,
        "referrals": referrals,
        "referrals_by_agency": dict(sorted(by_agency.items())),
    }


def report_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["section", "key", "value"])
    w.writerow(["period", "from", report["period"]["from"] or ""])
    w.writerow(["period", "to", report["period"]["to"] or ""])
    w.writerow(["total", "incidents", report["incidents"]])
    for k, v in report["by_class"].items():
        w.writerow(["by_class", k, v])
    for k, v in report["by_risk_area"].items():
        w.writerow(["by_risk_area", k, v])
    ack = report["time_to_first_acknowledgement_seconds"]
    for k in ("acknowledged", "p50", "p90"):
        w.writerow(["time_to_first_acknowledgement_seconds", k, "" if ack[k] is None else ack[k]])
    for k in ("escalations", "overdue_reminders", "referrals"):
        w.writerow(["total", k, report[k]])
    for k, v in report["referrals_by_agency"].items():
        w.writerow(["referrals_by_agency", k, v])
    return out.getvalue()
