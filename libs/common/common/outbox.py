"""The transactional outbox: events written with the state that caused them, published after commit.

A service calls `enqueue(conn, events)` inside its own transaction. The `OutboxRelay` publishes
unpublished rows in id order and marks them sent. It is woken by LISTEN/NOTIFY at commit and also
polls, so a lost notification only delays an event. With the broker down, writes still succeed;
the relay keeps retrying with backoff and publishes them when the broker returns. Published rows
stay for the retention period, with the partition and offset the broker gave them, so that what a
broker loses can be published again (`common.broker_watch`, `common.redrive`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import asyncpg
import structlog

from common.aio import sleep_unless_stopped
from common.db import Connection
from common.events import CloudEvent
from common.kafka import Publisher
from common.topics import TOPIC_OF, EventType, TopicNames
from common.woken_loop import run_woken_passes

log = structlog.get_logger(__name__)


def _insert(first: int, before: str = "", *, only_returned: bool = False) -> str:
    """One statement: `before` (data-modifying CTEs of the caller's own), the outbox rows from parameters
    $first..$first+4, and a NOTIFY (delivered at commit) that wakes this schema's relay. `only_returned`: only
    the rows whose event id the caller's `effect` returned (as `event_id`); the statement returns those ids."""
    p = [f"${first + i}" for i in range(5)]
    where, returned = (
        (" WHERE e.event_id IN (SELECT event_id FROM effect)", ", (SELECT array_agg(event_id) FROM effect)")
        if only_returned else ("", "")
    )
    return (
        f"WITH {before}inserted AS ("  # noqa: S608 - composed of the callers' constant SQL and $n placeholders
        " INSERT INTO outbox (event_id, topic, key, value, headers)"
        f" SELECT * FROM unnest({p[0]}::text[], {p[1]}::text[], {p[2]}::bytea[], {p[3]}::bytea[], {p[4]}::jsonb[])"
        f" AS e(event_id, topic, key, value, headers){where}"
        " ON CONFLICT (event_id) DO NOTHING RETURNING 1)"
        f" SELECT pg_notify('outbox_' || current_schema(), ''){returned} FROM (SELECT count(*) FROM inserted) AS n"
    )


_INSERT = _insert(1)
RawRow = tuple[str, str, bytes | None, bytes, list[tuple[str, bytes]]]


def notify_channel(schema: str) -> str:
    return f"outbox_{schema}"  # the same name _INSERT builds with current_schema()


def _relay_lock_key(schema: str) -> str:
    return f"outbox-relay:{schema}"


async def relay_lock(conn: Connection, schema: str) -> None:
    """The lock held by whoever publishes or re-drives this schema's outbox, for the caller's transaction,
    waited for (bounded by the transaction's lock_timeout). The relay holds the same lock for each publishing
    pass's transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _relay_lock_key(schema))


async def wake_relay(conn: Connection) -> None:
    """Wake this schema's relay at commit (rows were marked for publishing outside `enqueue`)."""
    await conn.execute("SELECT pg_notify('outbox_' || current_schema(), '')")


async def enqueue(conn: Connection, events: Sequence[CloudEvent]) -> None:
    """Write events to the outbox in the caller's transaction; the relay is woken at commit."""
    if events:
        await conn.fetch(_INSERT, *_event_columns(events))


async def enqueue_raw(conn: Connection, rows: Sequence[RawRow]) -> None:
    """Rows of (event id, logical topic, key, value, headers); used directly for dead letters."""
    await conn.fetch(_INSERT, *_columns(rows))


async def execute_and_enqueue(
    conn: Connection, statement: str, args: Sequence[object], events: Sequence[CloudEvent]
) -> None:
    """Run one data-modifying `statement` (parameters $1..$n) and write `events` to the outbox as a single
    SQL statement: atomic without an explicit transaction, so one round trip where BEGIN, the statement,
    the outbox insert and COMMIT would take four."""
    sql = _insert(len(args) + 1, before=f"effect AS ({statement}), ")
    await conn.fetch(sql, *args, *_event_columns(events))


async def execute_and_enqueue_returned(
    conn: Connection, statement: str, args: Sequence[object], events: Sequence[CloudEvent]
) -> set[str]:
    """As `execute_and_enqueue`, for a statement that returns an `event_id` column: only the events whose id it
    returned are written to the outbox (say, an UPDATE that finds some rows already changed by somebody else).
    Returns those ids."""
    sql = _insert(len(args) + 1, before=f"effect AS ({statement}), ", only_returned=True)
    row = await conn.fetchrow(sql, *args, *_event_columns(events))
    return set(row[1] or ()) if row is not None else set()


# An event's only header, as the outbox stores it (JSON), made once per event type rather than once per event.
_CE_TYPE_HEADERS = {t: json.dumps([["ce_type", t.value]]) for t in EventType}


def _event_columns(events: Sequence[CloudEvent]) -> list[list[object]]:
    """`_columns` of events: the same rows as `RawRow`s of (id, topic, key, value, [("ce_type", type)])."""
    return [
        [e.id for e in events],
        [TOPIC_OF[e.type].value for e in events],
        [e.subject.encode() for e in events],
        [e.to_bytes() for e in events],
        [_CE_TYPE_HEADERS[e.type] for e in events],
    ]


def _columns(rows: Sequence[RawRow]) -> list[list[object]]:
    return [
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [json.dumps([[k, v.decode("utf-8", "replace")] for k, v in r[4]]) for r in rows],
    ]


_HEADERS: dict[str, list[tuple[str, bytes]]] = {}  # the stored headers' JSON -> Kafka headers (a few kinds)


def _headers(stored: str) -> list[tuple[str, bytes]]:
    found = _HEADERS.get(stored)
    if found is None:
        found = [(k, v.encode()) for k, v in json.loads(stored)]
        if len(_HEADERS) < 256:  # events' headers repeat; dead letters' (with their error) mostly do not
            _HEADERS[stored] = found
    return list(found)


LOCK_RETRY_SECONDS = 0.01


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: Publisher,
        topic_names: TopicNames,
        *,
        schema: str,
        batch_size: int = 1000,
        poll_seconds: float = 1.0,
        linger_ms: int = 0,
    ) -> None:
        self._linger_seconds = linger_ms / 1000
        self._pool = pool
        self._publisher = publisher
        self._topics = topic_names
        self._schema = schema
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self.published_total = 0
        self.lock_was_busy = False  # the last pass found the relay lock held elsewhere

    async def publish_pending(self) -> int:
        """Publish one batch of unpublished events; returns how many were published.

        One relay per schema at a time keeps each incident's events in order: the pass holds the relay lock for
        its transaction, so the database lets go of it however the pass ends. (A session lock held for the pass
        saved two round trips, but a pass cut short could return its connection to the pool still holding the
        lock: after a PostgreSQL kill in make test's chaos run, intake's relay found the lock busy for good and
        published nothing more.)
        """
        async with self._pool.acquire() as conn, conn.transaction():
            self.lock_was_busy = not await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext($1))", _relay_lock_key(self._schema)
            )
            if self.lock_was_busy:
                return 0
            published = await self._publish_locked(conn)
        self.published_total += published
        return published

    async def _publish_locked(self, conn: Connection) -> int:
        rows = await conn.fetch(
            "SELECT id, topic, key, value, headers FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1",
            self._batch_size,
        )
        if not rows:
            return 0
        records = [(self._topics.physical(r["topic"]), r["key"], r["value"], _headers(r["headers"])) for r in rows]
        metadata = await self._publisher.send_batch(records)
        # One pass number for the whole pass (common.broker_watch reads offsets in (pass, id) order).
        await conn.execute(
            'UPDATE outbox SET published_at = now(), partition = u.p, "offset" = u.o, published_pass = n.pass '
            "FROM unnest($1::bigint[], $2::int[], $3::bigint[]) AS u(id, p, o),"
            " (SELECT nextval('outbox_publish_pass') AS pass) AS n WHERE outbox.id = u.id",
            [r["id"] for r in rows],
            [m.partition for m in metadata],
            [m.offset for m in metadata],
        )
        return len(rows)

    async def backlog(self) -> int:
        async with self._pool.acquire() as conn:
            return int(await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))

    async def run(self, stop: asyncio.Event) -> None:
        behind = False  # the last pass left work at once (a full batch, or the lock held elsewhere)

        async def one_pass() -> bool:
            nonlocal behind
            if self._linger_seconds > 0 and not behind:
                # Woken by a commit: what commits in the meantime goes out in this same pass.
                await sleep_unless_stopped(stop, self._linger_seconds)
            published = await self.publish_pending()
            if self.lock_was_busy:
                # The broker watch (or a re-drive) holds the lock, for up to a few hundred ms: try again soon.
                # Waiting for the next NOTIFY or poll instead held back what was committed meanwhile.
                await sleep_unless_stopped(stop, LOCK_RETRY_SECONDS)
                behind = True
                return True
            behind = published == self._batch_size
            return behind

        await run_woken_passes(
            stop, one_pass, pool=lambda: self._pool, channel=notify_channel(self._schema),
            poll_seconds=self._poll_seconds, failure_event="outbox.publish_failed",
        )
