"""Keeps each incident's status current from what the other services publish (and intake's own events,
which come back harmlessly: every write here is idempotent and status only moves forward)."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from common.consumer import Handler
from common.contracts import (
    IncidentAcknowledged,
    IncidentActionRecorded,
    IncidentEscalated,
    IncidentTriaged,
    NotificationDelivered,
    NotificationFailed,
    NotificationRequested,
)
from common.db import Connection
from common.events import CloudEvent
from common.topics import Topic
from intake import store
from intake.models import IncidentStatus
from intake.service import status_after

# One statement per event (each was two or three: at everyday rates intake handles five of these per report).
_TRIAGED = (
    "UPDATE incidents SET incident_class = $2, urgency = $3, updated_at = $4,"  # noqa: S608 - constant SQL
    f" status = {store.forward_to(IncidentStatus.TRIAGED)} WHERE id = $1"
)
_ESCALATED = (
    "UPDATE incidents SET escalation_level = greatest(coalesce(escalation_level, 0), $2), updated_at = $3,"  # noqa: S608
    f" status = {store.forward_to(IncidentStatus.ESCALATED)} WHERE id = $1"
)
_REQUESTED = (
    "WITH noted AS (INSERT INTO incident_notifications"  # noqa: S608 - constant SQL
    " (notification_id, incident_id, recipient_role, level, state, updated_at)"
    " SELECT $4, $1, $5, $2, 'requested', $3 WHERE EXISTS (SELECT 1 FROM incidents WHERE id = $1)"
    " ON CONFLICT (notification_id) DO UPDATE SET level = excluded.level) "
    + _ESCALATED
)


async def on_triaged(event: CloudEvent, conn: Connection) -> None:
    triaged = IncidentTriaged.model_validate(event.data)
    await conn.execute(
        _TRIAGED, UUID(triaged.incident_id), triaged.incident_class.value, triaged.urgency.value, event.time
    )


async def on_escalated(event: CloudEvent, conn: Connection) -> None:
    escalated = IncidentEscalated.model_validate(event.data)
    await conn.execute(_ESCALATED, UUID(escalated.incident_id), escalated.to_level, event.time)


async def on_notification_requested(event: CloudEvent, conn: Connection) -> None:
    r = NotificationRequested.model_validate(event.data)
    await conn.execute(
        _REQUESTED, UUID(r.incident_id), r.level, event.time, r.notification_id, r.recipient.role
    )


async def _notification_outcome(
    conn: Connection, event: CloudEvent, notification_id: str, incident_id: UUID, role: str, state: str,
    channel: str | None,
) -> None:
    # A delivery report may overtake its request (different topics); it then creates the row.
    await conn.execute(
        "INSERT INTO incident_notifications (notification_id, incident_id, recipient_role, state, channel, updated_at)"
        " SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM incidents WHERE id = $2)"
        " ON CONFLICT (notification_id) DO UPDATE SET state = excluded.state, channel = excluded.channel,"
        " updated_at = excluded.updated_at",
        notification_id, incident_id, role, state, channel, event.time,
    )


async def on_notification_delivered(event: CloudEvent, conn: Connection) -> None:
    d = NotificationDelivered.model_validate(event.data)
    await _notification_outcome(conn, event, d.notification_id, UUID(d.incident_id), d.recipient_role, "delivered",
                                d.channel.value)


async def on_notification_failed(event: CloudEvent, conn: Connection) -> None:
    f = NotificationFailed.model_validate(event.data)
    await _notification_outcome(conn, event, f.notification_id, UUID(f.incident_id), f.recipient_role, "failed",
                                None)


async def on_acknowledged(event: CloudEvent, conn: Connection) -> None:
    ack = IncidentAcknowledged.model_validate(event.data)
    # Keyed by event id: intake's own acknowledgements are already recorded under theirs.
    ack_id = uuid5(NAMESPACE_URL, "acknowledgement:" + event.id)
    if await store.insert_acknowledgement(conn, ack_id, event.id, ack):
        await store.advance(conn, UUID(ack.incident_id), IncidentStatus.ACKNOWLEDGED, event.time)


async def on_action_recorded(event: CloudEvent, conn: Connection) -> None:
    action = IncidentActionRecorded.model_validate(event.data)
    if await store.insert_action(conn, action):
        await store.advance(conn, UUID(action.incident_id), status_after(action), event.time)


def handlers() -> dict[str, Handler]:
    return {
        Topic.INCIDENTS_TRIAGED.value: on_triaged,
        Topic.INCIDENTS_ESCALATED.value: on_escalated,
        Topic.NOTIFICATIONS_REQUESTED.value: on_notification_requested,
        Topic.NOTIFICATIONS_DELIVERED.value: on_notification_delivered,
        Topic.NOTIFICATIONS_FAILED.value: on_notification_failed,
        Topic.INCIDENTS_ACKNOWLEDGED.value: on_acknowledged,
        Topic.INCIDENTS_ACTIONS.value: on_action_recorded,
    }
