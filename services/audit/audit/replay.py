"""Replay from the log, in order: print a timeline, re-publish the events to a named topic for a fresh
consumer, or rebuild the incident state projections from scratch and compare them with the live one."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from audit.projection import State, incident_id_of, rebuild
from audit.reports import belongs_to
from audit.store import READS_TOPIC
from common.db import Connection
from common.topics import DLQ_SUFFIX

PAGE_SIZE = 5000


@dataclass(frozen=True)
class LoggedEvent:
    seq: int
    topic: str
    recorded_at: datetime
    raw: bytes
    event: dict[str, Any]

    @property
    def is_cloud_event(self) -> bool:
        return self.topic != READS_TOPIC and not self.topic.endswith(DLQ_SUFFIX) and "specversion" in self.event


async def load_events(
    conn: Connection, school_id: str, *, incident_id: str | None = None,
    start: datetime | None = None, end: datetime | None = None,
) -> list[LoggedEvent]:
    """A school's logged events in seq order, optionally of one incident and/or recorded in a period."""
    rows = await conn.fetch(
        "SELECT seq, topic, recorded_at, event FROM audit_records WHERE school_id = $1"
        " AND ($2::timestamptz IS NULL OR recorded_at >= $2) AND ($3::timestamptz IS NULL OR recorded_at < $3)"
        " ORDER BY seq",
        school_id, start, end,
    )
    events = [LoggedEvent(r["seq"], r["topic"], r["recorded_at"], bytes(r["event"]), json.loads(r["event"]))
              for r in rows]
    if incident_id is not None:
        events = [e for e in events if belongs_to(e.event, incident_id)]
    return events


async def logged_pages(
    conn: Connection, school_id: str, *, page_size: int = PAGE_SIZE
) -> AsyncGenerator[list[LoggedEvent], None]:
    """A school's logged events in seq order, `page_size` at a time (keyset pages on the primary key), so that
    a reader of the whole log holds one page, not the log."""
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, not {page_size}")
    after = 0
    while True:
        rows = await conn.fetch(
            "SELECT seq, topic, recorded_at, event FROM audit_records WHERE school_id = $1 AND seq > $2"
            " ORDER BY seq LIMIT $3",
            school_id, after, page_size,
        )
        if not rows:
            return
        yield [LoggedEvent(r["seq"], r["topic"], r["recorded_at"], bytes(r["event"]), json.loads(r["event"]))
               for r in rows]
        if len(rows) < page_size:
            return
        after = rows[-1]["seq"]


async def folded_states(conn: Connection, school_id: str, *, page_size: int = PAGE_SIZE) -> dict[str, State]:
    """Every incident's state folded from the whole log a page at a time: memory holds the states and a page."""
    states: dict[str, State] = {}
    async for page in logged_pages(conn, school_id, page_size=page_size):
        rebuild((e.event for e in page), into=states)
    return states


def timeline_lines(events: list[LoggedEvent]) -> list[str]:
    lines = []
    for e in events:
        kind = e.event.get("type") or e.event.get("kind")
        subject = incident_id_of(e.event) if e.is_cloud_event else None
        lines.append(f"{e.seq:>8}  {e.recorded_at.isoformat()}  {e.topic:<28} {kind}"
                     + (f"  incident={subject}" if subject else ""))
    return lines


async def republish(events: list[LoggedEvent], bootstrap: str, topic: str) -> int:
    """Send the logged CloudEvents, in log order, as they were published, to `topic` (physical name)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")  # one sender, sequential sends: in order
    await producer.start()
    sent = 0
    try:
        for e in events:
            if not e.is_cloud_event:
                continue
            await producer.send_and_wait(topic, e.raw, key=str(e.event.get("subject", "")).encode())
            sent += 1
    finally:
        await producer.stop()
    return sent


async def live_states(conn: Connection, school_id: str, incident_ids: list[str] | None = None) -> dict[str, State]:
    rows = await conn.fetch(
        "SELECT incident_id, state FROM incident_projection WHERE school_id = $1"
        " AND ($2::text[] IS NULL OR incident_id = ANY($2::text[]))",
        school_id, incident_ids,
    )
    return {r["incident_id"]: json.loads(r["state"]) for r in rows}


async def rebuilt_states(
    conn: Connection, school_id: str, *, incident_id: str | None = None,
    start: datetime | None = None, end: datetime | None = None,
) -> dict[str, State]:
    """From scratch: the incidents named (one, or those with events in the period), each folded from
    every one of its events in the log."""
    everything = [e for e in await load_events(conn, school_id) if e.is_cloud_event]
    if incident_id is not None:
        wanted = {incident_id}
    elif start is not None or end is not None:
        in_period = await load_events(conn, school_id, start=start, end=end)
        wanted = {i for e in in_period if e.is_cloud_event and (i := incident_id_of(e.event))}
    else:
        wanted = {i for e in everything if (i := incident_id_of(e.event))}
    return rebuild([e.event for e in everything if incident_id_of(e.event) in wanted])


async def compare_with_live(
    conn: Connection, school_id: str, *, incident_id: str | None = None,
    start: datetime | None = None, end: datetime | None = None,
) -> dict[str, Any]:
    rebuilt = await rebuilt_states(conn, school_id, incident_id=incident_id, start=start, end=end)
    live = await live_states(conn, school_id, sorted(rebuilt) if (incident_id or start or end) else None)
    differences = []
    for incident in sorted(set(rebuilt) | set(live)):
        a, b = rebuilt.get(incident), live.get(incident)
        if a != b:
            fields = sorted(k for k in set(a or {}) | set(b or {}) if (a or {}).get(k) != (b or {}).get(k))
            differences.append({"incident_id": incident, "fields": fields})
    return {"school_id": school_id, "incidents": len(rebuilt), "equal": not differences,
            "differences": differences, "rebuilt": rebuilt}
