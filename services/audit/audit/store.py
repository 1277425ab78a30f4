"""Appending to the evidence log: every record of every topic (dead letters and malformed ones too),
once, in order of arrival per school, under a per-school advisory lock; a consumer batch is chained in
Python from the current heads and written with one COPY."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from audit.chain import AuditRecord, ChainHead, canonical_json, next_record
from audit.projection import fold, incident_id_of
from common.consumer import BatchedRawHandler, Delivery, RawHandler
from common.db import Connection
from common.topics import DLQ_SUFFIX, all_topic_names

UNATTRIBUTED = "unattributed"  # the school of a record whose value names none we can trust
READS_TOPIC = "audit.reads"  # where the log's own reads are recorded
_SCHOOL = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

_COLUMNS = "school_id, seq, event_id, topic, event, recorded_at, prev_hash, hash"


def row_to_record(row: Mapping[str, Any] | asyncpg.Record) -> AuditRecord:
    return AuditRecord(
        school_id=row["school_id"], seq=row["seq"], event_id=row["event_id"], topic=row["topic"],
        event=bytes(row["event"]), recorded_at=row["recorded_at"], prev_hash=bytes(row["prev_hash"]),
        hash=bytes(row["hash"]),
    )


async def chain_head(conn: Connection, school_id: str) -> ChainHead:
    return (await chain_heads(conn, [school_id]))[school_id]


async def chain_heads(conn: Connection, school_ids: Sequence[str]) -> dict[str, ChainHead]:
    """Each school's head (genesis for an empty chain), one index probe per school in one round trip."""
    rows = await conn.fetch(
        "SELECT s.school_id, h.seq, h.hash FROM unnest($1::text[]) AS s(school_id) LEFT JOIN LATERAL "
        "(SELECT seq, hash FROM audit_records r WHERE r.school_id = s.school_id ORDER BY seq DESC LIMIT 1) h ON true",
        list(school_ids),
    )
    return {
        r["school_id"]: ChainHead.genesis(r["school_id"]) if r["seq"] is None
        else ChainHead(r["school_id"], r["seq"], bytes(r["hash"]))
        for r in rows
    }


# incident -> (school the projection row was created with, its state as JSON text)
ProjectionRows = dict[str, tuple[str, str]]


async def _lock_and_read(
    conn: Connection, school_ids: Sequence[str], event_ids: list[str], incidents: Sequence[str]
) -> tuple[set[str], dict[str, ChainHead], ProjectionRows]:
    """In one round trip (audit_lock_and_read, migration 0002): the schools' advisory locks, held to the end
    of the caller's transaction; then, as committed by the last holder of each lock, which of the event ids
    the log already holds, each school's head, and the live projection rows of `incidents`, locked."""
    rows = await conn.fetch(
        "SELECT * FROM audit_lock_and_read($1::text[], $2::text[], $3::text[])",
        list(school_ids), event_ids, list(incidents),
    )
    stored: set[str] = set()
    heads: dict[str, ChainHead] = {}
    projection: ProjectionRows = {}
    for kind, key, seq, hash_, school, state in rows:
        if kind == 0:
            stored.add(key)
        elif kind == 1:
            heads[key] = ChainHead.genesis(key) if seq is None else ChainHead(key, seq, bytes(hash_))
        else:
            projection[key] = (school, state)
    return stored, heads, projection


@dataclass(frozen=True, slots=True)
class Entry:
    """What one event puts in the log, before it is chained."""

    school_id: str
    event_id: str
    topic: str
    event: bytes  # canonical bytes


async def append_many(
    conn: Connection, entries: Sequence[Entry], *, recorded_at: datetime | None = None
) -> list[AuditRecord]:
    """Append entries in the order given (inside the caller's transaction) and return the new records.

    An event id already in the log, or repeated in `entries`, is stored once. Each school's advisory lock
    is held to the end of the transaction, so a second appender (another audit process) waits and then
    builds on the head this one commits: chains never fork, and the (school_id, seq) key would refuse a
    fork anyway. Locks are taken in one order so that two appenders never wait on each other in a cycle."""
    records, _ = await _append(conn, entries, recorded_at=recorded_at)
    return records


async def _append(
    conn: Connection, entries: Sequence[Entry], *, recorded_at: datetime | None = None, incidents: Sequence[str] = ()
) -> tuple[list[AuditRecord], ProjectionRows]:
    """append_many, which also reads (and locks) the live projection rows of `incidents` with its own reads."""
    unique: dict[str, Entry] = {}
    for e in entries:
        unique.setdefault(e.event_id, e)
    if not unique:
        return [], {}
    schools = sorted({e.school_id for e in unique.values()})
    stored, heads, projection = await _lock_and_read(conn, schools, list(unique), incidents)
    at = recorded_at or datetime.now(UTC)
    records: list[AuditRecord] = []
    for e in unique.values():
        if e.event_id in stored:
            continue
        record = next_record(heads[e.school_id], event_id=e.event_id, topic=e.topic, event=e.event, recorded_at=at)
        heads[e.school_id] = record.head
        records.append(record)
    if records:
        await _insert(conn, records)
    return records, projection


async def _insert(conn: Connection, records: Sequence[AuditRecord]) -> None:
    """One COPY for all records; `pos` (order of arrival) is given in list order."""
    rows = [(r.school_id, r.seq, r.event_id, r.topic, r.event, r.recorded_at, r.prev_hash, r.hash) for r in records]
    await conn.copy_records_to_table("audit_records", columns=_COLUMNS.split(", "), records=rows)


async def append(
    conn: Connection, school_id: str, *, event_id: str, topic: str, event: bytes,
    recorded_at: datetime | None = None,
) -> AuditRecord | None:
    """Append one record (inside the caller's transaction); None if this event id is already in the log."""
    records = await append_many(conn, [Entry(school_id, event_id, topic, event)], recorded_at=recorded_at)
    return records[0] if records else None


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
    school, event_id, event, _ = _entry(d)
    return school, event_id, event


def _entry(d: Delivery) -> tuple[str, str, bytes, dict[str, Any] | None]:
    """delivery_entry, plus the event as a JSON object when it feeds the live projection."""
    dead_letter = d.topic.endswith(DLQ_SUFFIX)
    if d.event is not None and not dead_letter:
        obj = d.event.model_dump(mode="json")
        return d.event.schoolid, d.event.id, canonical_json(obj), obj
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
    return school, d.event_id, canonical_json(envelope), None


async def store_deliveries(deliveries: Sequence[Delivery], conn: Connection) -> None:
    """A consumer batch into the log (one lock per school, one COPY), then the live projection, whose rows
    are read with the log's heads: one locking read, one COPY and one upsert in all."""
    projected: dict[str, dict[str, Any]] = {}
    entries: list[Entry] = []
    for d in deliveries:
        school, event_id, event, obj = _entry(d)
        entries.append(Entry(school, event_id, d.topic, event))
        if obj is not None:
            projected.setdefault(event_id, obj)
    incidents = sorted({i for obj in projected.values() if (i := incident_id_of(obj)) is not None})
    records, rows = await _append(conn, entries, incidents=incidents)
    await _write_projections(conn, _folded(records, projected), rows)


async def update_projection(conn: Connection, record: AuditRecord) -> None:
    await update_projections(conn, [(record, json.loads(record.event))])


async def update_projections(conn: Connection, records: Sequence[tuple[AuditRecord, dict[str, Any]]]) -> None:
    """Fold the records (in order; each with its event as a JSON object) into their incidents' live state:
    one read and one upsert in all."""
    folded = [(i, record, event) for record, event in records if (i := incident_id_of(event)) is not None]
    if not folded:
        return
    rows = await conn.fetch(
        "SELECT incident_id, school_id, state::text FROM incident_projection WHERE incident_id = ANY($1::text[]) "
        "ORDER BY incident_id FOR UPDATE",
        sorted({incident for incident, _, _ in folded}),
    )
    await _write_projections(conn, folded, {r[0]: (r[1], r[2]) for r in rows})


def _folded(
    records: Sequence[AuditRecord], projected: Mapping[str, dict[str, Any]]
) -> list[tuple[str, AuditRecord, dict[str, Any]]]:
    """(incident, record, event) of each new record whose event names an incident, in log order."""
    folded = []
    for r in records:
        event = projected.get(r.event_id)
        if event is not None and (incident := incident_id_of(event)) is not None:
            folded.append((incident, r, event))
    return folded


async def _write_projections(
    conn: Connection, folded: Sequence[tuple[str, AuditRecord, dict[str, Any]]], rows: ProjectionRows
) -> None:
    """Fold the events into their incidents' states (the locked rows read for them, or new ones) and upsert
    the states changed, in one statement."""
    if not folded:
        return
    # incident -> [school the row was created with, state, last seq]; the states are this batch's own
    # (just read or built), so events are folded into them in place.
    states: dict[str, list[Any]] = {}
    for incident, record, event in folded:
        entry = states.get(incident)
        if entry is None:
            row = rows.get(incident)
            entry = states[incident] = [row[0], json.loads(row[1]), 0] if row else [record.school_id, None, 0]
        entry[1] = fold(entry[1], incident, event)
        entry[2] = record.seq
    changed = sorted(states)
    await conn.execute(
        "INSERT INTO incident_projection (incident_id, school_id, state, last_seq) "
        "SELECT u.i, u.s, st.value, u.q FROM unnest($1::text[], $2::text[], $4::bigint[]) WITH ORDINALITY "
        "AS u(i, s, q, n) JOIN jsonb_array_elements($3::jsonb) WITH ORDINALITY AS st(value, n) USING (n) "
        "ON CONFLICT (incident_id) DO UPDATE SET state = EXCLUDED.state, last_seq = EXCLUDED.last_seq",
        changed, [states[i][0] for i in changed], json.dumps([states[i][1] for i in changed], separators=(",", ":")),
        [states[i][2] for i in changed],
    )


def raw_handlers() -> dict[str, RawHandler]:
    """Every topic of the product, dead-letter topics included; each batch is stored at once."""
    handler = BatchedRawHandler(store_deliveries)
    return {name: handler for name in all_topic_names()}


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


async def record_pages(
    conn: Connection, school_id: str, page_size: int = 5000
) -> AsyncGenerator[list[AuditRecord], None]:
    """A school's records in order of arrival, `page_size` at a time (keyset pages on (school_id, pos)),
    so that reading the whole log holds one page in memory, not the log."""
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, not {page_size}")
    after = 0
    while True:
        rows = await conn.fetch(
            f"SELECT pos, {_COLUMNS} FROM audit_records WHERE school_id = $1 AND pos > $2 "  # noqa: S608
            "ORDER BY pos LIMIT $3",
            school_id, after, page_size,
        )
        if not rows:
            return
        yield [row_to_record(r) for r in rows]
        if len(rows) < page_size:
            return
        after = rows[-1]["pos"]


async def schools(conn: Connection) -> list[str]:
    return [r["school_id"] for r in await conn.fetch("SELECT DISTINCT school_id FROM audit_records ORDER BY 1")]
