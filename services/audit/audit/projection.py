"""Incident state as folded from the log's events: the same reducer keeps the live projection and
rebuilds it from scratch on replay, so the two can be compared field by field."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from common.topics import EventType

State = dict[str, Any]


def incident_id_of(event: dict[str, Any]) -> str | None:
    data = event.get("data")
    if isinstance(data, dict) and isinstance(data.get("incident_id"), str):
        return str(data["incident_id"])
    subject = event.get("subject")
    return subject if isinstance(subject, str) else None


def new_state(incident_id: str, school_id: str) -> State:
    return {
        "incident_id": incident_id,
        "school_id": school_id,
        "reference": None,
        "reported_at": None,
        "category": None,
        "risk_area": None,
        "incident_class": None,
        "urgency": None,
        "status": "open",
        "first_acknowledged_at": None,
        "acknowledgements": [],
        "notifications": [],
        "escalations": 0,
        "overdue_reminders": 0,
        "reminders": [],
        "referrals": [],
        "actions": [],
        "closed_at": None,
        "events": 0,
    }


def apply(state: State | None, event: dict[str, Any]) -> State | None:
    """The state after `event` (a CloudEvent as a JSON object); None when the event names no incident.
    `state` is left as it was."""
    incident = incident_id_of(event)
    if incident is None:
        return state
    return fold(copy.deepcopy(state) if state is not None else None, incident, event)


def fold(state: State | None, incident: str, event: dict[str, Any]) -> State:
    """`event` of `incident` (its incident_id_of) folded into `state` in place, or into a new state when
    None; returns the state. For a caller that owns the state (no copy), such as the live projection's
    batch, which holds states it has just read or built."""
    s = state if state is not None else new_state(incident, str(event.get("schoolid", "")))
    data: dict[str, Any] = event.get("data") or {}
    kind = event.get("type")
    at = event.get("time")
    s["events"] += 1
    if kind == EventType.INCIDENT_REPORTED:
        report = data.get("report") or {}
        s["reference"] = data.get("reference", s["reference"])
        s["reported_at"] = at
        s["category"] = report.get("category")
        s["risk_area"] = report.get("risk_area")
        if s["status"] == "open":
            s["status"] = "reported"
    elif kind == EventType.INCIDENT_TRIAGED:
        s["reference"] = data.get("reference", s["reference"])
        s["incident_class"] = data.get("incident_class")
        s["urgency"] = data.get("urgency")
        s["risk_area"] = data.get("risk_area", s["risk_area"])
        s["reminders"] = [
            {"code": r.get("code"), "owner_role": r.get("owner_role"), "due_at": r.get("due_at")}
            for r in data.get("reminders", [])
        ]
        if s["status"] in ("open", "reported"):
            s["status"] = "triaged"
    elif kind == EventType.NOTIFICATION_REQUESTED:
        recipient = data.get("recipient") or {}
        s["notifications"].append(
            {
                "notification_id": data.get("notification_id"),
                "role": recipient.get("role"),
                "name": recipient.get("name"),
                "channels": [c.get("kind") for c in recipient.get("channels", [])],
                "level": data.get("level"),
                "reason": data.get("reason"),
                "requested_at": at,
                "delivered": None,
                "failed": None,
            }
        )
        purpose = data.get("purpose")  # absent from requests made before it was added: the reason says it
        if purpose == "reminder" or (purpose is None and "overdue" in str(data.get("reason", "")).lower()):
            s["overdue_reminders"] += 1
        if s["status"] in ("open", "reported", "triaged"):
            s["status"] = "notified"
    elif kind in (EventType.NOTIFICATION_DELIVERED, EventType.NOTIFICATION_FAILED):
        for n in s["notifications"]:
            if n["notification_id"] == data.get("notification_id"):
                if kind == EventType.NOTIFICATION_DELIVERED:
                    n["delivered"] = {"channel": data.get("channel"), "at": at}
                else:
                    n["failed"] = {"errors": len(data.get("errors", [])), "at": at}
    elif kind == EventType.INCIDENT_ACKNOWLEDGED:
        by = data.get("by") or {}
        ack_at = data.get("at") or at
        s["acknowledgements"].append(
            {"role": by.get("role"), "name": by.get("name"), "at": ack_at, "via": data.get("via"),
             "notification_id": data.get("notification_id")}
        )
        if s["first_acknowledged_at"] is None or ack_at < s["first_acknowledged_at"]:
            s["first_acknowledged_at"] = ack_at
        if s["status"] != "closed":
            s["status"] = "acknowledged"
    elif kind == EventType.INCIDENT_ESCALATED:
        s["escalations"] += 1
        if s["status"] in ("open", "reported", "triaged", "notified"):
            s["status"] = "escalated"
    elif kind == EventType.INCIDENT_ACTION_RECORDED:
        action = data.get("action")
        s["actions"].append({"action": action, "agency": data.get("agency"), "at": data.get("at") or at,
                             **({"reminder": data["reminder"]} if data.get("reminder") else {})})
        if action == "referral_made":
            s["referrals"].append({"agency": data.get("agency"), "at": data.get("at") or at})
        if action == "incident_closed":
            s["status"] = "closed"
            s["closed_at"] = data.get("at") or at
    return s


def rebuild(events: Iterable[dict[str, Any]], into: dict[str, State] | None = None) -> dict[str, State]:
    """Every incident's state from its events in log order, starting from nothing (or, a page at a time,
    from the states folded so far: `into`, which is updated and returned)."""
    states: dict[str, State] = {} if into is None else into
    for event in events:
        incident = incident_id_of(event)
        if incident is None:
            continue
        new = apply(states.get(incident), event)
        if new is not None:
            states[incident] = new
    return states
