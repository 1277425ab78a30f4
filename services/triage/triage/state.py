"""Triage's incident state in PostgreSQL and the events it sends: shared by the consumer and the timers.

Every function here runs inside the caller's transaction; events leave only through the outbox.
Ids are derived (uuid5) from what they describe, so re-processing yields the same ids and the
outbox's unique event id absorbs the repeat.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from common.contracts import IncidentEscalated, NoticePurpose, Recipient, Reminder
from common.db import Connection
from common.events import CloudEvent, new_event
from common.outbox import enqueue
from common.topics import EventType
from triage.chain import EscalationCursor, FrozenChain, TimerOutcome, TimerStep
from triage.messages import NoticeContext, NotificationDraft, notices

SOURCE = "triage"
_NAMESPACE = uuid.UUID("6f1c2a52-8d8e-4d43-9a57-3c1f0b7e2a10")


_NAMESPACE_BYTES = _NAMESPACE.bytes


def derived_id(*parts: object) -> str:
    """`str(uuid.uuid5(_NAMESPACE, "/".join(parts)))`, computed directly: a few ids per report, at half the cost."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + "/".join(map(str, parts)).encode(), usedforsecurity=False)
                       .digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def notification_id(incident_id: str, level: int, repeat: int, role: str, generation: int) -> str:
    """Stable: the same incident, level, repeat, role and generation always give the same id."""
    return derived_id("notice", incident_id, level, repeat, role, generation)


@dataclass(frozen=True)
class IncidentState:
    id: str
    reference: str
    school_id: str
    correlation_id: str
    chain: FrozenChain
    context: NoticeContext
    generation: int
    status: str
    cursor: EscalationCursor
    exhausted: bool

    @classmethod
    def from_row(cls, row: Any) -> IncidentState:
        return cls(
            id=row["id"],
            reference=row["reference"],
            school_id=row["school_id"],
            correlation_id=row["correlation_id"],
            chain=FrozenChain.model_validate_json(row["chain"]),
            context=NoticeContext.model_validate_json(row["context"]),
            generation=row["generation"],
            status=row["status"],
            cursor=EscalationCursor(level=row["level"], repeat=row["repeat"], next_due_at=row["next_due_at"]),
            exhausted=row["exhausted"],
        )


INCIDENT_COLUMNS = (
    "id, reference, school_id, correlation_id, chain::text AS chain, context::text AS context, "
    "generation, status, level, repeat, next_due_at, exhausted"
)


async def lock_incident(conn: Connection, incident_id: str) -> IncidentState | None:
    row = await conn.fetchrow(f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1 FOR UPDATE", incident_id)  # noqa: S608
    return IncidentState.from_row(row) if row is not None else None


def _clock(now: datetime) -> Any:
    return lambda: now


def event_for(
    incident: IncidentState, type_: EventType, data: dict[str, Any], event_id: str, now: datetime,
    caused_by: CloudEvent | None,
) -> CloudEvent:
    return new_event(
        type_, source=SOURCE, subject=incident.id, schoolid=incident.school_id, data=data, caused_by=caused_by,
        correlationid=incident.correlation_id, clock=_clock(now), event_id=event_id,
    )


# (notification id, incident id, kind, level, repeat, role, generation, requested at): a `notifications` row.
NoticeRow = tuple[str, str, str, int, int, str, int, datetime]


def notice_events(
    incident: IncidentState,
    drafts: Sequence[NotificationDraft],
    *,
    repeat: int,
    now: datetime,
    caused_by: CloudEvent | None,
    kind: str = "escalation",
    ids: Sequence[str] | None = None,
) -> tuple[list[CloudEvent], list[NoticeRow]]:
    """One `notifications.requested` per draft, carrying the generation, and the rows that record them."""
    events: list[CloudEvent] = []
    rows: list[NoticeRow] = []
    for index, draft in enumerate(drafts):
        role = draft.recipient.role
        nid = ids[index] if ids is not None else notification_id(
            incident.id, draft.level, repeat, role, incident.generation
        )
        data = draft.request_data(
            notification_id=nid, incident_id=incident.id, reference=incident.reference, generation=incident.generation
        )
        rows.append((nid, incident.id, kind, draft.level, repeat, role, incident.generation, now))
        events.append(event_for(incident, EventType.NOTIFICATION_REQUESTED, data, nid, now, caused_by))
    return events, rows


async def record_notices(conn: Connection, rows: Sequence[NoticeRow]) -> None:
    """The notices' rows, of any number of incidents, in one statement."""
    if rows:
        await conn.execute(
            "INSERT INTO notifications (notification_id, incident_id, kind, level, repeat, role, generation, "
            "requested_at) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::int[], "
            "$6::text[], $7::int[], $8::timestamptz[]) ON CONFLICT (notification_id) DO NOTHING",
            *(list(column) for column in zip(*rows, strict=True)),
        )


async def request_notices(
    conn: Connection,
    incident: IncidentState,
    drafts: Sequence[NotificationDraft],
    *,
    repeat: int,
    now: datetime,
    caused_by: CloudEvent | None,
    kind: str = "escalation",
    ids: Sequence[str] | None = None,
) -> list[CloudEvent]:
    """Record (one statement) and build one `notifications.requested` per draft, carrying the generation."""
    events, rows = notice_events(incident, drafts, repeat=repeat, now=now, caused_by=caused_by, kind=kind, ids=ids)
    await record_notices(conn, rows)
    return events


async def apply_step(
    conn: Connection,
    incident: IncidentState,
    step: TimerStep,
    now: datetime,
    *,
    caused_by: CloudEvent | None = None,
    reason: str | None = None,
) -> list[CloudEvent]:
    """Move the cursor as `step` says and enqueue `incidents.escalated` plus the notices it sends."""
    if step.outcome is TimerOutcome.NOT_YET_DUE:
        return []
    exhausted = step.outcome is TimerOutcome.EXHAUSTED
    await conn.execute(
        "UPDATE incidents SET level = $2, repeat = $3, next_due_at = $4, exhausted = $5, updated_at = $6 "
        "WHERE id = $1",
        incident.id, step.cursor.level, step.cursor.repeat, step.cursor.next_due_at, exhausted, now,
    )
    why = reason or step.reason
    if step.outcome is TimerOutcome.REPEATED:
        why = f"the chain is exhausted; repeating the top level (repeat {step.cursor.repeat}): {why}"
    elif exhausted:
        why = f"the chain is exhausted and its repeats are spent; no more notices: {why}"
    escalated = IncidentEscalated(
        incident_id=incident.id, from_level=step.from_level, to_level=step.cursor.level, repeat=step.cursor.repeat,
        generation=incident.generation, reason=why,
    )
    event_id = derived_id(
        "escalated", incident.id, step.cursor.level, step.cursor.repeat, incident.generation, step.outcome.value
    )
    events = [event_for(incident, EventType.INCIDENT_ESCALATED, escalated.model_dump(mode="json"), event_id, now,
                        caused_by)]
    drafts = notices(incident.context, step.cursor.level, step.notify, why)
    events += await request_notices(conn, incident, drafts, repeat=step.cursor.repeat, now=now, caused_by=caused_by)
    await enqueue(conn, events)
    return events


@dataclass(frozen=True)
class DueReminder:
    incident: IncidentState
    code: str
    reminder: Reminder
    owner: Recipient
    notified_count: int
    next_notify_at: datetime
    period: timedelta


async def notify_overdue_reminder(conn: Connection, due: DueReminder, now: datetime) -> list[CloudEvent]:
    """Re-notify a reminder's owner once for this due period, and set the next period's time."""
    count = due.notified_count + 1
    following = due.next_notify_at + due.period
    while following <= now:
        following += due.period
    await conn.execute(
        "UPDATE reminders SET notified_count = $3, next_notify_at = $4 WHERE incident_id = $1 AND code = $2",
        due.incident.id, due.code, count, following,
    )
    reason = f"overdue reminder ({count}): {due.reminder.text}"
    (draft,) = notices(due.incident.context, due.incident.cursor.level, (due.owner,), reason)
    draft = replace(draft, reminders=(due.reminder,), purpose=NoticePurpose.REMINDER)
    nid = derived_id("reminder", due.incident.id, due.code, count, due.owner.role)
    events = await request_notices(
        conn, due.incident, [draft], repeat=count, now=now, caused_by=None, kind="reminder", ids=[nid]
    )
    await enqueue(conn, events)
    return events
