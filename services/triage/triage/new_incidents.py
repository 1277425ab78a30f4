"""New incidents written set-wise: a batch of classified reports becomes its incidents, reminders, first notices
and outgoing events with one statement per table, whatever the batch's size.

Classification and planning stay per report (pure Python); only the writes are shared. A report whose incident
is already stored (a retry under a new event id, or a repeat within the batch) has no effect, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from asyncpg import Record

from common.contracts import IncidentReported
from common.db import Connection
from common.events import CloudEvent
from common.outbox import enqueue
from common.topics import EventType
from triage.classify import Classification
from triage.escalation import EscalationPlan
from triage.policy import SchoolPolicy
from triage.policy_derived import derived_from
from triage.state import IncidentState, NoticeRow, derived_id, event_for, notice_events

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PlannedIncident:
    """One report as triage decided it, before anything is written."""

    event: CloudEvent
    reported: IncidentReported
    policy: SchoolPolicy
    classification: Classification
    plan: EscalationPlan
    now: datetime


_INSERT_INCIDENTS = (
    "INSERT INTO incidents (id, reference, school_id, correlation_id, incident_class, urgency, risk_area, "
    "policy_version, chain, context, level, repeat, next_due_at, triaged_at, updated_at) "
    "SELECT id, ref, school, corr, cls, urg, risk, ver, ch::json, ctx::json, lvl, rep, due, at, at "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], "
    "$9::text[], $10::text[], $11::int[], $12::int[], $13::timestamptz[], $14::timestamptz[]) "
    "AS u(id, ref, school, corr, cls, urg, risk, ver, ch, ctx, lvl, rep, due, at) "
    "ON CONFLICT (id) DO NOTHING RETURNING id, generation, status, exhausted"
)
# The new incidents' reminders and first notices, and the early signals that were waiting for them, in one
# statement (one round trip where there were three): the incidents were written by the statement before.
_INSERT_REMINDERS_AND_NOTICES_TAKE_SIGNALS = (
    "WITH new_reminders AS ("
    " INSERT INTO reminders (incident_id, code, text, owner_role, owner, due_at, period_seconds, next_notify_at)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::json[], $6::timestamptz[],"
    " $7::float8[], $8::timestamptz[]) ON CONFLICT DO NOTHING), "
    "new_notices AS ("
    " INSERT INTO notifications (notification_id, incident_id, kind, level, repeat, role, generation, requested_at)"
    " SELECT * FROM unnest($9::text[], $10::text[], $11::text[], $12::int[], $13::int[], $14::text[], $15::int[],"
    " $16::timestamptz[]) ON CONFLICT (notification_id) DO NOTHING) "
    "DELETE FROM early_signals WHERE incident_id = ANY($17::text[]) "
    "RETURNING incident_id, topic, event::text AS event, received_at"
)

ReminderRow = tuple[str, str, str, str, str | None, datetime | None, float | None, datetime | None]


@dataclass(frozen=True)
class StoredIncidents:
    """The incidents a batch wrote, and the signals (acknowledgements, actions) that arrived before them."""

    incidents: list[IncidentState]
    early_signals: list[Record]


async def store_new_incidents(
    conn: Connection, planned: Sequence[PlannedIncident], *, reminder_min_period: timedelta
) -> StoredIncidents:
    """Write the planned incidents not stored yet (in the caller's transaction) and enqueue, per incident and
    in batch order, its `incidents.triaged` then its first notices. Returns the incidents written, and the early
    signals for them, taken out of `early_signals` for the caller to apply."""
    first: dict[str, PlannedIncident] = {}
    for p in planned:
        if first.setdefault(p.reported.incident_id, p) is not p:  # a repeat within the batch: the first counts
            log.info("triage.report_already_triaged", incident_id=p.reported.incident_id)
    fresh = list(first.values())
    if not fresh:
        return StoredIncidents([], [])
    rows = await conn.fetch(_INSERT_INCIDENTS, *_columns([_incident_row(p) for p in fresh], 14))
    inserted = {r["id"]: r for r in rows}
    stored: list[IncidentState] = []
    reminders: list[ReminderRow] = []
    notices: list[NoticeRow] = []
    events: list[CloudEvent] = []
    for p in fresh:
        row = inserted.get(p.reported.incident_id)
        if row is None:
            log.info("triage.report_already_triaged", incident_id=p.reported.incident_id)
            continue
        incident = IncidentState(
            id=p.reported.incident_id, reference=p.reported.reference, school_id=p.reported.report.school_id,
            correlation_id=p.event.correlationid, chain=p.plan.chain, context=p.plan.context,
            generation=row["generation"], status=row["status"], cursor=p.plan.cursor, exhausted=row["exhausted"],
        )
        stored.append(incident)
        reminders += _reminder_rows(p, reminder_min_period)
        triaged = p.plan.triaged_data(incident_id=incident.id, reference=incident.reference)
        events.append(event_for(
            incident, EventType.INCIDENT_TRIAGED, triaged,
            derived_id("triaged", incident.id, incident.generation), p.now, p.event,
        ))
        notice_batch, notice_rows = notice_events(
            incident, p.plan.first_notices, repeat=0, now=p.now, caused_by=p.event
        )
        events += notice_batch
        notices += notice_rows
    if not stored:
        return StoredIncidents([], [])
    signals = await conn.fetch(
        _INSERT_REMINDERS_AND_NOTICES_TAKE_SIGNALS, *_columns(reminders, 8), *_columns(notices, 8),
        [incident.id for incident in stored],
    )
    await enqueue(conn, events)
    return StoredIncidents(stored, list(signals))


def _incident_row(p: PlannedIncident) -> tuple[object, ...]:
    plan = p.plan
    return (
        p.reported.incident_id, p.reported.reference, p.reported.report.school_id, p.event.correlationid,
        p.classification.incident_class.value, p.classification.urgency.value, p.classification.risk_area.value,
        plan.chain.policy_version, plan.stored_chain, plan.stored_context,
        plan.cursor.level, plan.cursor.repeat, plan.cursor.next_due_at, p.now,
    )


def _reminder_rows(p: PlannedIncident, min_period: timedelta) -> list[ReminderRow]:
    """A new incident's reminders; a closable one with an owner gets its re-notice schedule."""
    rows: list[ReminderRow] = []
    derived = derived_from(p.policy)
    for reminder in p.plan.reminders:
        owner = derived.owner_json(reminder.owner_role)
        period = next_at = None
        # A reminder with a due time is chased until an action closes it (common.reminders); one without is a
        # standing instruction, in every notice and never overdue.
        if reminder.due_at is not None and owner is not None:
            next_at = max(reminder.due_at, p.now + min_period)
            period = max(reminder.due_at - p.now, min_period)
        rows.append((p.reported.incident_id, reminder.code, reminder.text, reminder.owner_role, owner,
                     reminder.due_at, period.total_seconds() if period else None, next_at))
    return rows


def _columns(rows: Sequence[tuple[object, ...]], width: int) -> list[list[object]]:
    """Rows as columns (the arrays the statements unnest); `width` columns even when there are no rows."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


__all__ = ["PlannedIncident", "StoredIncidents", "store_new_incidents"]
