"""Noticing that the broker lost what it acknowledged, and re-driving it from the outbox.

A broker can forget acknowledged records: the embedded one keeps everything in memory, and a Kafka
topic can be deleted and re-created or an unclean leader elected. Every few seconds, each service
compares what its outbox says it published (the partition and offset of each row) with the broker:

- a topic that vanished, or a partition that no longer holds, at the offset the broker gave it, the
  last of our rows not yet known safe (empty there, or another record), means the broker lost records:
  every row of that topic after its safe point is marked for publishing again (`common.redrive`), and
  the relay sends them in their original order; so do offsets that stopped rising with our rows in the
  order they were published (after a broker restart, new rows can land on the very offsets of lost ones);
- otherwise the topic's safe point moves forward: the highest outbox id up to which every consumer of
  the topic (`common.topics.consumers_of`) has committed an offset past the row. A consumer group that
  has committed nothing holds the safe point where it is, so nothing it has not seen is ever skipped.

Consumers whose offsets vanished read from the earliest record (the consumer runner's reset policy)
and their inboxes absorb the repeats. The same pass forgets published rows older than the retention.

A watch's first check, and its next after a re-drive or a purge, reads every row not yet known safe; each
other check reads only the passes published since the check before, and remembers, per partition, the last
row not yet known safe (`_Checked`). The broker is asked on one client kept between checks
(`common.kafka.BrokerQuestions`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import structlog
from aiokafka import TopicPartition

from common.aio import cancelled_from_inside, sleep_unless_stopped, within
from common.db import Connection, unnest_columns
from common.kafka import BrokerQuestions, partitions_in
from common.outbox import relay_lock
from common.redrive import mark_after_safe_points
from common.topics import TopicNames

log = structlog.get_logger(__name__)

BROKER_TIMEOUT_SECONDS = 15.0
PURGE_EVERY_SECONDS = 3600.0
_BEGAN_AGAIN = "its offsets began again below ours"

# The rows published and not yet known safe, per topic from its safe point on: a range of outbox_topic_id for
# each topic, its topics found by a loose scan of the same index (one probe per topic). Written as a join on the
# safe points, the planner read every retained row (seven days of them by default) on each check: 0.3-0.4 s a
# statement at 300,000 rows. (OFFSET 0 keeps the planner from flattening the lateral subquery back into that.
# The range is written as row comparisons, from the topic's safe point to its last id, so that it is one range
# of outbox_topic_id: with `o.topic = t.topic AND o.id > ...` the planner scanned the primary key from the safe
# point, every topic's rows: 20,238 blocks against 10,130 with 10,000 rows not yet safe.)
_UNSAFE_ROWS = (
    "WITH RECURSIVE topics AS ("
    " SELECT (SELECT min(topic) FROM outbox) AS topic"
    " UNION ALL SELECT (SELECT min(o.topic) FROM outbox o WHERE o.topic > t.topic) FROM topics t"
    " WHERE t.topic IS NOT NULL), "
    "unsafe AS ("
    ' SELECT u.id, u.topic, u.partition, u."offset", u.published_pass FROM topics t'
    " LEFT JOIN outbox_safe_point s ON s.topic = t.topic"
    ' CROSS JOIN LATERAL (SELECT o.id, o.topic, o.partition, o."offset", o.published_pass FROM outbox o'
    "  WHERE (o.topic, o.id) > (t.topic, coalesce(s.safe_id, 0))"
    "  AND (o.topic, o.id) <= (t.topic, 9223372036854775807)"
    "  AND o.published_at IS NOT NULL AND o.partition IS NOT NULL OFFSET 0) AS u"
    " WHERE t.topic IS NOT NULL) "
)
# The relay publishes pass after pass, each pass's rows in id order, so per partition the offsets the broker
# gave our rows rise in (pass, id) order. Not in id order alone: a transaction that took its id first may
# commit after a later one was published (notify's concurrent deliveries did so all the time, and each was
# taken for a lost log). An offset that does not rise means the log began again under them: rows published
# after a broker restart can land on the very offsets of lost ones. (Rows published before passes were
# numbered have none, and came first.)
_LOG_BEGAN_AGAIN = (
    _UNSAFE_ROWS + "SELECT DISTINCT topic FROM (SELECT topic, \"offset\", "  # noqa: S608 - constant SQL
    'lag("offset") OVER (PARTITION BY topic, partition ORDER BY published_pass NULLS FIRST, id) AS previous '
    'FROM unsafe) AS x WHERE "offset" <= previous'
)
# The same for the rows published by the passes after pass $1 only (found by outbox_by_publish_pass, migration
# 0004), each partition's first such row compared with its last row checked before ($2, $3, $4: topic, partition,
# offset); with, per partition, the last of these rows and whether its offsets began again. Once a full check has
# looked at every row not yet known safe, each later check reads only what was published since the one before,
# and the step under the relay lock only what was published since the outbox was read.
_PUBLISHED_SINCE = (
    'SELECT l.id, l.topic, l.partition, l."offset", l.published_pass, l.began_again,'
    " (SELECT v.value FROM outbox v WHERE v.id = l.id) AS value FROM ("
    ' SELECT DISTINCT ON (topic, partition) id, topic, partition, "offset", published_pass,'
    '  bool_or("offset" <= previous) OVER (PARTITION BY topic, partition) AS began_again FROM ('
    '   SELECT o.id, o.topic, o.partition, o."offset", o.published_pass,'
    '   coalesce(lag(o."offset") OVER (PARTITION BY o.topic, o.partition ORDER BY o.published_pass, o.id),'
    '    b."offset") AS previous FROM outbox o'
    '   LEFT JOIN unnest($2::text[], $3::int[], $4::bigint[]) AS b(topic, partition, "offset")'
    "   ON b.topic = o.topic AND b.partition = o.partition"
    "   WHERE o.published_pass > $1 AND o.published_at IS NOT NULL AND o.partition IS NOT NULL) AS x"
    " ORDER BY topic, partition, published_pass DESC, id DESC) AS l"
)
# Per topic and partition, the last row published and not yet known safe: the broker must still hold it where
# it said. Its value is read for those rows only, not carried through the sort, and by a subquery: as a join, the
# planner hashed the whole outbox for it (a sequential scan, 39 ms of a check at 500 reports/s into triage).
_LAST_UNSAFE = (
    _UNSAFE_ROWS + 'SELECT l.id, l.topic, l.partition, l."offset", l.published_pass,'  # noqa: S608
    " (SELECT v.value FROM outbox v WHERE v.id = l.id) AS value FROM ("
    ' SELECT DISTINCT ON (topic, partition) id, topic, partition, "offset", published_pass FROM unsafe'
    " ORDER BY topic, partition, published_pass DESC NULLS LAST, id DESC) AS l"
)
# The last publishing pass: read before a full check, it is where the next check's reading begins.
_LATEST_PUBLISHING = "SELECT coalesce(max(published_pass), 0) FROM outbox WHERE published_pass IS NOT NULL"
_SAFE_POINTS = "SELECT topic, safe_id FROM outbox_safe_point"
# The last row up to which every row was published when the outbox was read: a safe point may move only that far.
# (The first row not placed comes from the partial index outbox_not_placed, migration 0004.)
_PUBLISHED_UP_TO = (
    "SELECT coalesce((SELECT min(id) - 1 FROM outbox WHERE published_at IS NULL OR partition IS NULL),"
    " (SELECT max(id) FROM outbox), 0)"
)

# The safe point stops just before the first row that some consumer has not committed past ($2, per
# partition), or at the last row if there is none, and never beyond row $3; it never moves back.
_ADVANCE = (
    "INSERT INTO outbox_safe_point (topic, safe_id) "
    "SELECT $1, coalesce(first_unsafe - 1, last_id) FROM ("
    " SELECT min(o.id) FILTER (WHERE o.published_at IS NULL OR o.partition IS NULL"
    '  OR o."offset" >= coalesce(($2::bigint[])[o.partition + 1], 0)) AS first_unsafe, max(o.id) AS last_id'
    " FROM outbox o WHERE o.topic = $1 AND (o.topic, o.id) <= ($1, $3)"
    " AND (o.topic, o.id) > ($1, coalesce((SELECT safe_id FROM outbox_safe_point WHERE topic = $1), 0))) AS x "
    "WHERE coalesce(first_unsafe - 1, last_id) IS NOT NULL "
    "ON CONFLICT (topic) DO UPDATE SET safe_id = greatest(outbox_safe_point.safe_id, excluded.safe_id),"
    " updated_at = now()"
)


@dataclass(frozen=True)
class _Placed:
    """An outbox row where the broker said it put it."""

    id: int
    offset: int
    value: bytes


@dataclass(frozen=True)
class _Checked:
    """What the checks so far have looked at: every row published by passes up to `up_to_pass`; per partition,
    the last of them not yet known safe (the broker must still hold it where it said)."""

    up_to_pass: int
    last: dict[tuple[str, int], _Placed]

    def places(self) -> list[list[object]]:
        """The last rows' topics, partitions and offsets, as three arrays."""
        return unnest_columns(((t, p, placed.offset) for (t, p), placed in self.last.items()), width=3)

    def not_yet_safe(self, safe_ids: Mapping[str, int]) -> _Checked:
        last = {key: placed for key, placed in self.last.items() if placed.id > safe_ids.get(key[0], 0)}
        return _Checked(self.up_to_pass, last)


@dataclass(frozen=True)
class _Snapshot:
    """What the outbox said before the broker was asked."""

    checked: _Checked
    published_up_to: int
    began_again: list[str]  # topics whose offsets stopped rising with our rows


@dataclass(frozen=True)
class Loss:
    topic: str
    reason: str


class BrokerWatch:
    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        bootstrap: str,
        topic_names: TopicNames,
        *,
        schema: str,
        consumer_groups: Callable[[str], Iterable[str]],
        interval_seconds: float = 5.0,
        retention: timedelta = timedelta(days=7),
    ) -> None:
        self._pool = pool
        self._broker = BrokerQuestions(bootstrap)  # one client for every check's questions
        self._topics = topic_names
        self._schema = schema
        self._consumer_groups = consumer_groups
        self._interval = interval_seconds
        self._retention = retention
        self.checks_total = 0
        self.check_failures_total = 0
        self.losses_total = 0
        self.redriven_total = 0
        # How long checks have held the relay lock: the relay publishes nothing meanwhile.
        self.lock_held_seconds_total = 0.0
        # What the checks so far looked at (none: the next check reads every row not yet known safe).
        self._checked: _Checked | None = None

    async def check_once(self) -> list[Loss]:
        """Compare the outbox with the broker once: re-drive what was lost, or move safe points on.

        The relay lock is held only for what must not overlap a relay pass. The broker is asked without it: those
        round trips took about 20 ms on a quiet machine and far longer under load, all of it time the relay could
        publish nothing (bench/RESULTS.md, triage's relay stage). Rows the relay publishes meanwhile may have
        landed on a log that began again, and consumers may have committed offsets on that log: so, once the
        consumers' offsets are read, the lock is taken (it waits for a pass in progress to commit) to look at
        the passes published since the outbox was read (the rows read then were looked at without it), and to
        re-drive if the broker lost anything. Otherwise the lock is let go before the safe points move: they
        move only over rows that were already published when the outbox was read, by offsets read before every
        pass that could have put rows on a new log was looked at; what the relay publishes after that cannot
        change them. (Held for the safe points' scans too, the lock kept the relay waiting 20-35 ms a check.)
        """
        self.checks_total += 1
        async with self._pool().acquire() as conn:
            seen = await self._snapshot(conn)
        last = seen.checked.last
        if not last:
            self._checked = seen.checked
            return []
        losses, partitions = await self._compare(last)
        known = {loss.topic for loss in losses}
        losses += [Loss(topic, _BEGAN_AGAIN) for topic in seen.began_again if topic not in known]
        committed = {} if losses else await self._committed(partitions)
        async with self._pool().acquire() as conn:
            async with conn.transaction():
                # Wait for a relay pass in progress (it may be stuck on a dead broker for a while), never skip.
                await conn.execute(f"SET LOCAL lock_timeout = '{int(BROKER_TIMEOUT_SECONDS * 2)}s'")
                await relay_lock(conn, self._schema)
                locked_at = time.monotonic()
                try:
                    known = {loss.topic for loss in losses}
                    checked, began_again = await _published_since(conn, seen.checked)
                    losses += [Loss(topic, _BEGAN_AGAIN) for topic in began_again if topic not in known]
                    if losses:
                        self._checked = None  # what was re-driven is published again: the next check reads it all
                        await self._redrive(conn, losses)
                        return losses
                finally:
                    self.lock_held_seconds_total += time.monotonic() - locked_at
            for topic, consumed in committed.items():
                await conn.execute(_ADVANCE, topic, consumed, seen.published_up_to)
        self._checked = checked
        return []

    async def _snapshot(self, conn: Connection) -> _Snapshot:
        published_up_to = int(await conn.fetchval(_PUBLISHED_UP_TO))
        safe_ids = {r["topic"]: r["safe_id"] for r in await conn.fetch(_SAFE_POINTS)}
        if self._checked is not None:
            checked, began_again = await _published_since(conn, self._checked.not_yet_safe(safe_ids))
            return _Snapshot(checked.not_yet_safe(safe_ids), published_up_to, began_again)
        # Every row not yet known safe. The last pass is read first: the rows of later passes are among them.
        up_to_pass = int(await conn.fetchval(_LATEST_PUBLISHING))
        rows = await conn.fetch(_LAST_UNSAFE)
        last = {(r["topic"], r["partition"]): _Placed(r["id"], r["offset"], bytes(r["value"])) for r in rows}
        up_to_pass = max([up_to_pass, *(r["published_pass"] or 0 for r in rows)])
        # After the rows above: it looks at every row they came from, and perhaps a few published since.
        began_again = [r["topic"] for r in await conn.fetch(_LOG_BEGAN_AGAIN)]
        return _Snapshot(_Checked(up_to_pass, last), published_up_to, began_again)

    async def _redrive(self, conn: Connection, losses: list[Loss]) -> None:
        marked = await mark_after_safe_points(conn, [loss.topic for loss in losses])
        self.losses_total += len(losses)
        self.redriven_total += marked
        log.warning(
            "outbox.broker_lost_events", redriven=marked, topics={loss.topic: loss.reason for loss in losses},
        )

    async def _compare(self, last: dict[tuple[str, int], _Placed]) -> tuple[list[Loss], dict[str, list[int]]]:
        """Is each row the broker last acknowledged still where it said? Returns the losses, and each
        surviving topic's partitions."""
        physical = self._topics.physical
        cluster = await within(BROKER_TIMEOUT_SECONDS, self._broker.metadata())
        partitions = partitions_in(cluster, {physical(t) for t, _ in last})
        losses: dict[str, Loss] = {}
        positions: dict[TopicPartition, int] = {}
        for (topic, partition), placed in last.items():
            if physical(topic) not in partitions:
                losses[topic] = Loss(topic, "the topic is gone")
            elif partition not in partitions[physical(topic)]:
                losses[topic] = Loss(topic, f"partition {partition} is gone")
            else:
                positions[TopicPartition(physical(topic), partition)] = placed.offset
        held = await within(BROKER_TIMEOUT_SECONDS, self._broker.records_at(positions, cluster=cluster))
        for tp, value in sorted(held.items()):
            topic = self._topics.logical(tp.topic)
            expected = last[(topic, tp.partition)].value
            if topic not in losses and value != expected:
                where = f"partition {tp.partition} offset {positions[tp]}"
                losses[topic] = Loss(topic, f"{where} {'holds another record' if value else 'is empty'}")
        survivors = {self._topics.logical(t): ps for t, ps in partitions.items()}
        return list(losses.values()), {t: ps for t, ps in survivors.items() if t not in losses}

    async def _committed(self, partitions: dict[str, list[int]]) -> dict[str, list[int]]:
        """Per topic that somebody consumes, per partition, the offset every consumer of it has committed past
        (none: 0)."""
        groups_of = {t: sorted(self._topics.physical(g) for g in self._consumer_groups(t)) for t in partitions}
        wanted: dict[str, list[TopicPartition]] = {}
        for topic, groups in groups_of.items():
            for group in groups:
                wanted.setdefault(group, []).extend(TopicPartition(self._topics.physical(topic), p)
                                                    for p in partitions[topic])
        found = await within(
            BROKER_TIMEOUT_SECONDS,
            asyncio.gather(*(self._broker.committed_offsets(g, tps) for g, tps in wanted.items())),
        )
        committed = dict(zip(wanted, found, strict=True))
        return {
            topic: [
                min((committed[g].get(TopicPartition(self._topics.physical(topic), p)) or 0) for g in groups)
                for p in range(max(partitions[topic]) + 1)
            ]
            # nobody known to consume it: everything stays re-drivable
            for topic, groups in groups_of.items() if groups and partitions[topic]
        }

    async def purge_expired(self) -> int:
        """Forget published rows older than the retention period: they can no longer be re-driven."""
        async with self._pool().acquire() as conn:
            status = await conn.execute(
                "DELETE FROM outbox WHERE published_at IS NOT NULL AND created_at < now() - $1::interval",
                self._retention,
            )
        return int(status.split()[-1])

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self._watch(stop)
        finally:
            with contextlib.suppress(Exception):
                await within(5.0, self._broker.close())

    async def _watch(self, stop: asyncio.Event) -> None:
        next_purge = 0.0
        while not stop.is_set():
            try:
                await self.check_once()
                if time.monotonic() >= next_purge:
                    purged = await self.purge_expired()
                    if purged:
                        log.info("outbox.purged", rows=purged)
                        self._checked = None  # it may have forgotten rows the checks know of
                    next_purge = time.monotonic() + PURGE_EVERY_SECONDS
            except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - an outage: look again later
                if isinstance(exc, asyncio.CancelledError) and not cancelled_from_inside():
                    raise
                self.check_failures_total += 1
                log.info("outbox.broker_watch_unavailable", error=str(exc) or type(exc).__name__)
            await sleep_unless_stopped(stop, self._interval)


async def _published_since(conn: Connection, checked: _Checked) -> tuple[_Checked, list[str]]:
    """What the passes after `checked` published: the checks' new state, and the topics whose offsets began
    again below the rows checked before or below each other."""
    rows = await conn.fetch(_PUBLISHED_SINCE, checked.up_to_pass, *checked.places())
    last = dict(checked.last)
    last.update({(r["topic"], r["partition"]): _Placed(r["id"], r["offset"], bytes(r["value"])) for r in rows})
    up_to_pass = max([checked.up_to_pass, *(r["published_pass"] for r in rows)])
    return _Checked(up_to_pass, last), sorted({r["topic"] for r in rows if r["began_again"]})
