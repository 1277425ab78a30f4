"""Appending to the evidence log: every record of every topic (dead letters and malformed ones too),
once, in order of arrival per school, under a per-school advisory lock."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from audit.chain import AuditRecord, ChainHead, canonical_event_bytes, canonical_json, next_record
from audit.projection import apply, incident_id_of
from common.consumer import Delivery, RawHandler
from common.db import Connection
from common.topics import DLQ_SUFFIX, all_topic_names

UNATTRIBUTED = "unattributed"  # the school of a record whose value names none we can trust
READS_TOPIC = "audit.reads"  # where the log's own reads are recorded
_SCHOOL = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

_COLUMNS = "school_id, seq, event_id, topic, event, recorded_at, prev_hash, hash"


def row_to_record(row: Mapping[str, Any]) -> AuditRecord:
    return AuditRecord(
        school_id=row["school_id"], seq=row["seq"], event_id=row["event_id"], topic=row["topic"],
        event=bytes(row["event"]), recorded_at=row["recorded_at"], prev_hash=bytes(row["prev_hash"]),
        hash=bytes(row["hash"]),
    )


async def chain_head(conn: Connection, school_id: str) -> ChainHead:
    row = await conn.fetchrow(
        "SELECT seq, hash FROM audit_records WHERE school_id = $1 ORDER BY seq DESC LIMIT 1", school_id
    )
    if row is None:
        return ChainHead.genesis(school_id)
    return ChainHead(school_id, row["seq"], bytes(row["hash"]))


async def append(
    conn: Connection, school_id: str, *, event_id: str, topic: str, event: bytes,
    recorded_at: datetime | None = None,
) -> AuditRecord | None:
    """Append one record (inside the caller's transaction); None if this event id is already in the log."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('audit:' || $1::text))", school_id)
    if await conn.fetchval("SELECT 1 FROM audit_records WHERE event_id = $1", event_id):
        return None
    head = await chain_head(conn, school_id)
    record = next_record(
        head, event_id=event_id, topic=topic, event=event, recorded_at=recorded_at or datetime.now(UTC)
    )
    await conn.execute(
        f"INSERT INTO audit_records ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",  # noqa: S608
        record.school_id, record.seq, record.event_id, record.topic, record.event, record.recorded_at,
        record.prev_hash, record.hash,
    )
    return record


def _headers(d: Delivery) -> dict[str, str]:
    return {k: (v or b"").decode("utf-8", "replace") for k, v in (d.record.headers or ())}


def _claimed_school(value: bytes | None) -> str:
    try:
        obj = json.loads(value or b"")
    except ValueError:
        return UNATTRIBUTED
    school = obj.get("schoolid") if isinstance(obj, dict) else None
    return school if isinstance(school, str) and _SCHOOL.match(school) else UNATTRIBUTED


def delivery_entry(d: Delivery) -> tuple[str, str, bytes]:
    """(school, event id, canonical event bytes) of what a delivery puts in the log.

    An event as published is stored as its own canonical bytes. A dead letter, or a value that is not
    a valid CloudEvent, is stored inside an envelope that keeps the raw value (base64), the reason and
    where it came from, so that nothing the broker carried is lost from the evidence."""
    dead_letter = d.topic.endswith(DLQ_SUFFIX)
    if d.event is not None and not dead_letter:
        return d.event.schoolid, d.event.id, canonical_event_bytes(d.event)
    envelope: dict[str, Any] = {
        "kind": "dead_letter" if dead_letter else "malformed",
        "error": d.error,
        "headers": _headers(d),
        "partition": d.record.partition,
        "offset": d.record.offset,
        "event": d.event.model_dump(mode="json") if d.event is not None else None,
        "value_b64": None if d.event is not None else base64.b64encode(d.record.value or b"").decode(),
    }
    school = d.event.schoolid if d.event is not None else _claimed_school(d.record.value)
    return school, d.event_id, canonical_json(envelope)


async def store_delivery(d: Delivery, conn: Connection) -> None:
    school, event_id, event = delivery_entry(d)
    record = await append(conn, school, event_id=event_id, topic=d.topic, event=event)
    if record is not None and d.event is not None and not d.topic.endswith(DLQ_SUFFIX):
        await update_projection(conn, record)


async def update_projection(conn: Connection, record: AuditRecord) -> None:
    event = json.loads(record.event)
    incident = incident_id_of(event)
    if incident is None:
        return
    row = await conn.fetchrow("SELECT state FROM incident_projection WHERE incident_id = $1 FOR UPDATE", incident)
    state = apply(json.loads(row["state"]) if row else None, event)
    if state is None:
        return
    await conn.execute(
        "INSERT INTO incident_projection (incident_id, school_id, state, last_seq) VALUES ($1, $2, $3::jsonb, $4) "
        "ON CONFLICT (incident_id) DO UPDATE SET state = EXCLUDED.state, last_seq = EXCLUDED.last_seq",
        incident, record.school_id, json.dumps(state), record.seq,
    )


def raw_handlers() -> dict[str, RawHandler]:
    """Every topic of the product, dead-letter topics included."""
    return {name: store_delivery for name in all_topic_names()}


async def record_read(
    conn: Connection, *, school_id: str, person_id: str, role: str, action: str, params: Mapping[str, Any]
) -> AuditRecord | None:
    """Record a read of the audit log in the log itself (in the reader's school's chain)."""
    at = datetime.now(UTC)
    entry = {
        "kind": "audit_read",
        "by": {"person_id": person_id, "role": role},
        "action": action,
        "params": {k: v for k, v in params.items() if v is not None},
        "at": at.isoformat(),
    }
    async with conn.transaction():
        return await append(
            conn, school_id, event_id=f"read:{uuid.uuid4()}", topic=READS_TOPIC, event=canonical_json(entry),
            recorded_at=at,
        )


async def load_records(conn: Connection, school_id: str, *, order: str = "pos") -> list[AuditRecord]:
    """A school's records in order of arrival (`pos`, what verification reads) or by seq."""
    column = "pos" if order == "pos" else "seq"
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM audit_records WHERE school_id = $1 ORDER BY {column}",  # noqa: S608
        school_id,
    )
    return [row_to_record(dict(r)) for r in rows]


async def schools(conn: Connection) -> list[str]:
    return [r["school_id"] for r in await conn.fetch("SELECT DISTINCT school_id FROM audit_records ORDER BY 1")]
