"""Keeps each incident's status current from what the other services publish (and intake's own events,
which come back harmlessly: every write here is idempotent and status only moves forward)."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import NAMESPACE_URL, UUID, uuid5

import structlog

from common.consumer import BatchedHandler, Handler
from common.contracts import (
    IncidentAcknowledged,
    IncidentActionRecorded,
    IncidentEscalated,
    IncidentTriaged,
    NotificationDelivered,
    NotificationFailed,
    NotificationRequested,
)
from common.db import Connection, unnest_columns
from common.events import CloudEvent
from common.roles import chain_roles
from common.topics import EventType, Topic
from intake import store
from intake.models import IncidentStatus
from intake.service import status_after

log = structlog.get_logger(__name__)

# One statement per batch of events of a kind (each event used to take one, and at everyday rates intake handles
# five of these per report). Events of a kind may repeat an incident or a notification within a batch: the last
# one's values are kept, as when they were written one at a time, and levels only rise.
# The chain's roles and the reminders' codes travel as one comma-joined text each per incident (unnest flattens an
# array of arrays; neither a role nor a code has a comma).
_TRIAGED = (
    "UPDATE incidents SET incident_class = u.incident_class, urgency = u.urgency, updated_at = u.at,"  # noqa: S608
    f" status = {store.forward_to(IncidentStatus.TRIAGED)}, chain_roles = string_to_array(NULLIF(u.roles, ''), ','),"
    " reminder_codes = string_to_array(u.reminders, ',')"
    " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[])"
    " AS u(id, incident_class, urgency, at, roles, reminders) WHERE incidents.id = u.id"
    # Those an acknowledgement or action had moved on before the chain was known: their status is counted again.
    " RETURNING incidents.id, incidents.status IN ('acknowledged', 'actions_recorded', 'closed') AS signalled"
)
# Raise each incident's escalation level (never lower it) and move its status forward to escalated.
_ESCALATED = (
    "UPDATE incidents SET escalation_level = greatest(coalesce(escalation_level, 0), u.level),"  # noqa: S608
    f" updated_at = u.at, status = {store.forward_to(IncidentStatus.ESCALATED)}"
    " FROM (SELECT id, max(level) AS level, max(at) AS at"
    " FROM unnest($1::uuid[], $2::int[], $3::timestamptz[]) AS e(id, level, at) GROUP BY id) AS u"
    " WHERE incidents.id = u.id"
)
# A request notes the notification (if its incident is known here) and escalates the incident to its level.
_REQUESTED = (
    "WITH noted AS (INSERT INTO incident_notifications"  # noqa: S608 - constant SQL
    " (notification_id, incident_id, recipient_role, level, state, updated_at)"
    " SELECT n.notification_id, n.id, n.role, n.level, 'requested', n.at"
    " FROM unnest($4::text[], $5::uuid[], $6::text[], $7::int[], $8::timestamptz[])"
    " AS n(notification_id, id, role, level, at) WHERE EXISTS (SELECT 1 FROM incidents WHERE incidents.id = n.id)"
    " ON CONFLICT (notification_id) DO UPDATE SET level = excluded.level) "
    + _ESCALATED
)
# A delivery report may overtake its request (different topics); it then creates the row.
_OUTCOMES = (
    "INSERT INTO incident_notifications (notification_id, incident_id, recipient_role, state, channel, updated_at)"
    " SELECT o.notification_id, o.id, o.role, o.state, o.channel, o.at"
    " FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])"
    " AS o(notification_id, id, role, state, channel, at)"
    " WHERE EXISTS (SELECT 1 FROM incidents WHERE incidents.id = o.id)"
    " ON CONFLICT (notification_id) DO UPDATE SET state = excluded.state, channel = excluded.channel,"
    " updated_at = excluded.updated_at"
)


async def on_triaged(events: Sequence[CloudEvent], conn: Connection) -> None:
    latest: dict[str, tuple[object, ...]] = {}
    for event in events:
        t = IncidentTriaged.model_validate(event.data)
        latest[t.incident_id] = (
            UUID(t.incident_id), t.incident_class.value, t.urgency.value, event.time, ",".join(chain_roles(t.chain)),
            ",".join(r.code for r in t.reminders),
        )
    updated = await conn.fetch(_TRIAGED, *unnest_columns(latest.values()))
    went_back = await store.recount_signals(conn, [r["id"] for r in updated if r["signalled"]])
    if went_back:
        log.warning("intake.signals_outside_chain", incidents=[str(i) for i in went_back],
                    detail="acknowledged or acted on, before triage decided the chain, by no one in it")


async def on_escalated(events: Sequence[CloudEvent], conn: Connection) -> None:
    rows = []
    for event in events:
        e = IncidentEscalated.model_validate(event.data)
        rows.append((UUID(e.incident_id), e.to_level, event.time))
    await conn.execute(_ESCALATED, *unnest_columns(rows))


async def on_notification_requested(events: Sequence[CloudEvent], conn: Connection) -> None:
    levels = []  # every request escalates (to the highest level asked)
    latest: dict[str, tuple[object, ...]] = {}  # a notice asked for again keeps the last request's level
    for event in events:
        r = NotificationRequested.model_validate(event.data)
        levels.append((UUID(r.incident_id), r.level, event.time))
        latest[r.notification_id] = (r.notification_id, UUID(r.incident_id), r.recipient.role, r.level, event.time)
    await conn.execute(_REQUESTED, *unnest_columns(levels), *unnest_columns(latest.values()))


async def on_notification_outcome(events: Sequence[CloudEvent], conn: Connection) -> None:
    """notifications.delivered and notifications.failed, together: the last outcome of a notification stands."""
    latest: dict[str, tuple[object, ...]] = {}
    for event in events:
        if event.type is EventType.NOTIFICATION_DELIVERED:
            d = NotificationDelivered.model_validate(event.data)
            latest[d.notification_id] = (d.notification_id, UUID(d.incident_id), d.recipient_role, "delivered",
                                         d.channel.value, event.time)
        elif event.type is EventType.NOTIFICATION_FAILED:
            f = NotificationFailed.model_validate(event.data)
            latest[f.notification_id] = (f.notification_id, UUID(f.incident_id), f.recipient_role, "failed", None,
                                         event.time)
        else:
            raise ValueError(f"not a notification outcome: {event.type}")
    await conn.execute(_OUTCOMES, *unnest_columns(latest.values()))


async def on_acknowledged(event: CloudEvent, conn: Connection) -> None:
    ack = IncidentAcknowledged.model_validate(event.data)
    # Keyed by event id: intake's own acknowledgements are already recorded under theirs.
    ack_id = uuid5(NAMESPACE_URL, "acknowledgement:" + event.id)
    if await store.insert_acknowledgement(conn, ack_id, event.id, ack):
        await store.advance(conn, UUID(ack.incident_id), IncidentStatus.ACKNOWLEDGED, event.time, by_role=ack.by.role)


async def on_action_recorded(event: CloudEvent, conn: Connection) -> None:
    action = IncidentActionRecorded.model_validate(event.data)
    if await store.insert_action(conn, action):
        await store.advance(conn, UUID(action.incident_id), status_after(action), event.time,
                            by_role=action.by.role)


def handlers() -> dict[str, Handler]:
    outcomes = BatchedHandler(on_notification_outcome)
    return {
        Topic.INCIDENTS_TRIAGED.value: BatchedHandler(on_triaged),
        Topic.INCIDENTS_ESCALATED.value: BatchedHandler(on_escalated),
        Topic.NOTIFICATIONS_REQUESTED.value: BatchedHandler(on_notification_requested),
        Topic.NOTIFICATIONS_DELIVERED.value: outcomes,
        Topic.NOTIFICATIONS_FAILED.value: outcomes,
        Topic.INCIDENTS_ACKNOWLEDGED.value: on_acknowledged,
        Topic.INCIDENTS_ACTIONS.value: on_action_recorded,
    }
