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

from common.contracts import ActionKind, Agency, IncidentReported
from common.db import Connection
from common.events import CloudEvent
from common.outbox import enqueue
from common.topics import EventType
from triage.classify import Classification
from triage.escalation import EscalationPlan, reminders_closed_by
from triage.policy import SchoolPolicy
from triage.policy_derived import derived_from
from triage.state import IncidentState, NoticeRow, derived_id, event_for, notice_events, record_notices

log = structlog.get_logger(__name__)

# Reminders an action can close: only these can be overdue and re-notify their owner. A standing
# instruction ("do not view, copy, share or delete") is in every notice but is never "overdue".
CLOSABLE: frozenset[str] = frozenset(
    code
    for action in ActionKind
    if action is not ActionKind.INCIDENT_CLOSED
    for agency in (None, *Agency)
    for code in reminders_closed_by(action, agency)
)


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
    "SELECT id, ref, school, corr, cls, urg, risk, ver, ch::jsonb, ctx::jsonb, lvl, rep, due, at, at "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], "
    "$9::text[], $10::text[], $11::int[], $12::int[], $13::timestamptz[], $14::timestamptz[]) "
    "AS u(id, ref, school, corr, cls, urg, risk, ver, ch, ctx, lvl, rep, due, at) "
    "ON CONFLICT (id) DO NOTHING RETURNING id, generation, status, exhausted"
)
_INSERT_REMINDERS = (
    "INSERT INTO reminders (incident_id, code, text, owner_role, owner, due_at, period_seconds, next_notify_at) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::timestamptz[], "
    "$7::float8[], $8::timestamptz[]) ON CONFLICT DO NOTHING"
)

ReminderRow = tuple[str, str, str, str, str | None, datetime | None, float | None, datetime | None]


async def store_new_incidents(
    conn: Connection, planned: Sequence[PlannedIncident], *, reminder_min_period: timedelta
) -> list[IncidentState]:
    """Write the planned incidents not stored yet (in the caller's transaction) and enqueue, per incident and
    in batch order, its `incidents.triaged` then its first notices. Returns the incidents written."""
    first: dict[str, PlannedIncident] = {}
    for p in planned:
        if first.setdefault(p.reported.incident_id, p) is not p:  # a repeat within the batch: the first counts
            log.info("triage.report_already_triaged", incident_id=p.reported.incident_id)
    fresh = list(first.values())
    if not fresh:
        return []
    rows = await conn.fetch(_INSERT_INCIDENTS, *_columns([_incident_row(p) for p in fresh]))
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
    if reminders:
        await conn.execute(_INSERT_REMINDERS, *_columns(reminders))
    await record_notices(conn, notices)
    await enqueue(conn, events)
    return stored


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
        if reminder.due_at is not None and owner is not None and reminder.code in CLOSABLE:
            next_at = max(reminder.due_at, p.now + min_period)
            period = max(reminder.due_at - p.now, min_period)
        rows.append((p.reported.incident_id, reminder.code, reminder.text, reminder.owner_role, owner,
                     reminder.due_at, period.total_seconds() if period else None, next_at))
    return rows


def _columns(rows: Sequence[tuple[object, ...]]) -> list[list[object]]:
    return [list(column) for column in zip(*rows, strict=True)]


__all__ = ["CLOSABLE", "PlannedIncident", "store_new_incidents"]
