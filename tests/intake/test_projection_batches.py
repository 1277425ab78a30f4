"""The status projection handles a poll's events of a kind with one statement: repeats within the batch, a
delivery report overtaking its request and levels out of order come out as they did one event at a time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from intake_support import person, reported

from common.consumer import BatchedHandler
from common.events import CloudEvent, new_event
from common.topics import EventType, Topic
from intake.projection import handlers

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def _event(kind: EventType, incident: str, data: dict[str, Any], minutes: int) -> CloudEvent:
    return new_event(kind, source="test", subject=incident, schoolid="school-a", data=data,
                     clock=lambda: T0 + timedelta(minutes=minutes))


def _triaged(incident: str, incident_class: str, urgency: str, minutes: int) -> CloudEvent:
    return _event(EventType.INCIDENT_TRIAGED, incident, {
        "incident_id": incident, "reference": "OSI-TEST00", "incident_class": incident_class, "urgency": urgency,
        "risk_area": "content", "reasons": [], "reminders": [], "policy_version": "p1", "chain": []}, minutes)


def _requested(incident: str, notification: str, level: int, role: str, minutes: int) -> CloudEvent:
    return _event(EventType.NOTIFICATION_REQUESTED, incident, {
        "notification_id": notification, "incident_id": incident, "reference": "OSI-TEST00", "school_id": "school-a",
        "school_name": "School A", "incident_class": "illegal", "urgency": "immediate", "level": level,
        "generation": 1, "recipient": {"role": role, "channels": [{"kind": "email", "address": "x@a.sch.uk"}]},
        "reminders": [], "reason": "first notice"}, minutes)


def _delivered(incident: str, notification: str, role: str, minutes: int) -> CloudEvent:
    return _event(EventType.NOTIFICATION_DELIVERED, incident, {
        "notification_id": notification, "incident_id": incident, "recipient_role": role, "channel": "email",
        "provider_id": "m-1", "attempts": 1}, minutes)


def _failed(incident: str, notification: str, role: str, minutes: int) -> CloudEvent:
    return _event(EventType.NOTIFICATION_FAILED, incident, {
        "notification_id": notification, "incident_id": incident, "recipient_role": role, "level": 1,
        "generation": 1, "errors": ["email: 550 no such mailbox"]}, minutes)


async def _batch(app: FastAPI, topic: Topic, events: list[CloudEvent]) -> None:
    handler = handlers()[topic.value]
    assert isinstance(handler, BatchedHandler)
    async with app.state.runtime.pool.acquire() as conn, conn.transaction():
        await handler.handle_batch(events, conn)


async def test_a_batch_with_repeats_and_overtaking_reports_ends_as_one_event_at_a_time_would(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    first, second = await reported(client), await reported(client)
    unknown = str(uuid.uuid4())  # not reported here: its events change nothing
    n_dsl, n_head, n_second = (str(uuid.uuid4()) for _ in range(3))

    await _batch(app, Topic.INCIDENTS_TRIAGED, [
        _triaged(first, "inappropriate", "normal", 1), _triaged(second, "security", "normal", 1),
        _triaged(first, "illegal", "immediate", 2),  # a later triage of the same incident in the same batch
        _triaged(unknown, "illegal", "immediate", 2),
    ])
    # Delivery reports arrive before their requests (other topics) and a failure is overtaken by a delivery.
    await _batch(app, Topic.NOTIFICATIONS_DELIVERED, [
        _delivered(first, n_dsl, "dsl", 4), _failed(second, n_second, "dsl", 4),
        _delivered(second, n_second, "dsl", 5), _delivered(unknown, str(uuid.uuid4()), "dsl", 5),
    ])
    await _batch(app, Topic.NOTIFICATIONS_REQUESTED, [
        _requested(first, n_dsl, 1, "dsl", 3), _requested(first, n_head, 2, "headteacher", 3),
        _requested(first, n_head, 1, "headteacher", 3),  # the same notice again, at a lower level
        _requested(second, n_second, 1, "dsl", 3), _requested(unknown, str(uuid.uuid4()), 1, "dsl", 3),
    ])

    view = (await client.get(f"/v1/incidents/{first}", headers=person())).json()
    assert (view["status"], view["incident_class"], view["urgency"]) == ("escalated", "illegal", "immediate")
    assert view["escalation_level"] == 2  # the highest level requested in the batch: levels never go down
    states = {n["notification_id"]: (n["recipient_role"], n["state"], n["level"]) for n in view["notifications"]}
    assert states == {n_dsl: ("dsl", "delivered", 1), n_head: ("headteacher", "requested", 1)}

    view = (await client.get(f"/v1/incidents/{second}", headers=person())).json()
    assert (view["status"], view["incident_class"], view["escalation_level"]) == ("escalated", "security", 1)
    assert [(n["state"], n["channel"]) for n in view["notifications"]] == [("delivered", "email")]

    async with app.state.runtime.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM incidents WHERE id = $1", uuid.UUID(unknown)) == 0
        assert await conn.fetchval(
            "SELECT count(*) FROM incident_notifications WHERE incident_id = $1", uuid.UUID(unknown)) == 0


async def test_an_event_of_the_wrong_kind_on_an_outcome_topic_fails_its_batch(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    incident = await reported(client)
    with pytest.raises(ValueError, match="not a notification outcome"):
        await _batch(app, Topic.NOTIFICATIONS_DELIVERED, [_triaged(incident, "security", "normal", 1)])
