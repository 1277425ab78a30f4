"""Losing nothing when the broker forgets: re-drive from the outbox, safe points, and the redrive command.

The embedded broker keeps everything in memory, so restarting it is exactly the amnesia the product
must survive: topics, records and committed offsets all gone. A producer service publishes one event on
every topic of the product; a consumer service handles them all and counts each effect.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from support.helpers import effects, eventually
from support.sample_service import EFFECTS, record_effect

from common import broker_watch
from common.events import CloudEvent, new_event
from common.kafka import committed_offsets, ensure_topics, topic_partitions
from common.outbox import enqueue
from common.runtime import Runtime, ServiceSpec
from common.settings import ServiceSettings
from common.topics import TOPIC_OF, Topic

TOPICS = [t.value for t in Topic]


def _settings(isolation: str, stack, name: str) -> ServiceSettings:
    return ServiceSettings(
        service_name=name, db_schema=f"{isolation}_{name}", database_url=stack.admin_dsn,
        kafka_bootstrap_servers=stack.bootstrap, topic_prefix=f"{isolation}.", outbox_poll_seconds=0.2,
        outbox_watch_seconds=0.5,
    )


def _producer(isolation: str, stack, consumers: Iterable[str] = ("sample",), *, watch_seconds: float = 0.5) -> Runtime:
    """A service that only publishes; with a long `watch_seconds` the test runs its broker watch itself."""
    names = list(consumers)
    settings = _settings(isolation, stack, "producer").model_copy(update={"outbox_watch_seconds": watch_seconds})
    return Runtime(ServiceSpec(settings, [], consumers_of=lambda _: names))


def _consumer(isolation: str, stack) -> Runtime:
    return Runtime(ServiceSpec(
        _settings(isolation, stack, "sample"), [EFFECTS], handlers=dict.fromkeys(TOPICS, record_effect),
    ))


def _one_per_topic(batch: int, subject: str | None = None) -> list[CloudEvent]:
    return [
        new_event(kind, source="tests", subject=subject or f"incident-{batch}", schoolid="school-a",
                  data={"batch": batch})
        for kind in TOPIC_OF
    ]


async def _publish(producer: Runtime, events: list[CloudEvent]) -> None:
    async with producer.pool.acquire() as conn, conn.transaction():
        await enqueue(conn, events)

    async def published() -> bool:
        return await producer.relay.backlog() == 0

    await eventually(published, what="the producer's outbox to be published")


async def _effects_of(stack, isolation: str, events: list[CloudEvent], producer: Runtime | None = None) -> None:
    ids = {e.id: e.topic.value for e in events}

    async def all_there() -> bool:
        return set(ids) <= set(await effects(stack.admin_dsn, f"{isolation}_sample"))

    try:
        await eventually(all_there, timeout=60, what=f"the effects of {len(ids)} events")
    except AssertionError as exc:
        seen_effects = await effects(stack.admin_dsn, f"{isolation}_sample")
        missing = sorted(t for i, t in ids.items() if i not in seen_effects)
        watch = producer.broker_watch if producer is not None else None
        seen = f"losses {watch.losses_total}, re-driven {watch.redriven_total}" if watch else ""
        held = await _end_offsets(stack, isolation)
        raise AssertionError(f"{exc}: missing on {missing}; {seen}; broker holds {held}") from None


async def _each_once(stack, isolation: str, events: list[CloudEvent], producer: Runtime) -> None:
    """Every event's effect happened, and after room for a repeat to show itself, exactly once."""
    await _effects_of(stack, isolation, events, producer)
    await asyncio.sleep(2.0)
    assert await effects(stack.admin_dsn, f"{isolation}_sample") == {e.id: 1 for e in events}


async def _safe_everywhere(stack, isolation: str) -> bool:
    [(behind,)] = await _query(
        stack,
        f"SELECT count(*) FROM {isolation}_producer.outbox o"  # noqa: S608 - the test's own schema
        f" LEFT JOIN {isolation}_producer.outbox_safe_point s USING (topic) WHERE o.id > coalesce(s.safe_id, 0)",
    )
    return behind == 0


def _restart_broker(stack) -> None:
    stack.stop_broker()
    stack.start_broker()


class _Pipeline:
    """A producer service and a consumer of every topic, started together and stopped together, whatever a
    test did in between (the consumer may be stopped and a new one started across a broker restart)."""

    def __init__(self, stack, isolation: str, consumers: Iterable[str] = ("sample",)) -> None:
        self._stack, self._isolation = stack, isolation
        self.producer = _producer(isolation, stack, consumers)
        self.consumer = _consumer(isolation, stack)

    async def __aenter__(self) -> _Pipeline:
        await self.producer.start()
        await self.consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.consumer.stop()
        await self.producer.stop()

    async def restart_broker_then_consumer(self) -> None:
        """The broker comes back empty (records and committed offsets gone), then a new consumer starts."""
        _restart_broker(self._stack)
        self.consumer = _consumer(self._isolation, self._stack)
        await self.consumer.start()


async def test_events_the_broker_lost_before_they_were_consumed_are_each_processed_once_on_every_topic(
    stack, isolation
):
    async with _Pipeline(stack, isolation) as pipeline:
        producer = pipeline.producer
        consumed = _one_per_topic(1)
        await _publish(producer, consumed)
        await _effects_of(stack, isolation, consumed)
        await pipeline.consumer.stop()

        unconsumed = _one_per_topic(2)
        await _publish(producer, unconsumed)  # on the broker, acknowledged, and nobody has read them yet
        await pipeline.restart_broker_then_consumer()  # ... now gone, with every committed offset

        await _each_once(stack, isolation, consumed + unconsumed, producer)
        assert producer.broker_watch.losses_total >= len(TOPICS)
        assert producer.broker_watch.redriven_total >= len(unconsumed)


@pytest.mark.parametrize("reading", ["since the last check", "everything not yet safe"])
async def test_a_loss_is_seen_even_when_new_events_landed_on_the_lost_ones_offsets(stack, isolation, reading):
    # After a restart the relay publishes new events at once; on a quiet topic they take the very offsets of
    # the lost ones, so "is our last record still there?" alone would be answered yes. Seen both by a check that
    # reads what was published since the one before (the watch checked once when the producer started), and by
    # one that reads every row not yet known safe (a watch's first check, or its next after a re-drive).
    async with _lost_then_newer(stack, isolation) as (producer, consumer, lost, newer):
        _restart_broker(stack)
        await _publish(producer, newer)  # offset 0 of every topic again, where the lost ones were

        if reading == "everything not yet safe":
            producer.broker_watch._checked = None  # noqa: SLF001 - as a watch that has not checked yet
        losses = await producer.broker_watch.check_once()
        assert {loss.topic for loss in losses} == set(TOPICS)

        await consumer.start()
        await _each_once(stack, isolation, lost + newer, producer)


async def test_a_broker_that_lost_nothing_is_not_suspected_after_a_burst_of_batched_publishes(stack, isolation):
    # Tansu reports a partition's log end as its last batch's base offset + 1, below the true end: the
    # watch must judge by the records themselves, or every batched burst would look like a loss.
    producer = _producer(isolation, stack, consumers=("absent",))
    await producer.start()
    try:
        burst = [e for batch in range(40) for e in _one_per_topic(batch)]
        await _publish(producer, burst)
        await asyncio.sleep(2.0)  # four watch intervals
        assert await _end_offsets(stack, isolation) <= len(burst)
        assert producer.broker_watch.losses_total == 0
        assert producer.broker_watch.redriven_total == 0
        assert producer.metrics()["broker_watch_lock_held_seconds_total"] > 0  # how long the relay was kept waiting
    finally:
        await producer.stop()


async def test_events_committed_out_of_id_order_are_not_taken_for_a_log_that_began_again(stack, isolation):
    # Concurrent transactions take outbox ids in one order and commit in another (notify's deliveries do, all
    # the time): the later id is published first, at the lower offset. That is the relay's order, not a lost log.
    producer = _producer(isolation, stack, watch_seconds=3600.0)
    await producer.start()
    try:
        first, second = _one_per_topic(1, subject="incident-1"), _one_per_topic(2, subject="incident-1")
        async with producer.pool.acquire() as slow:
            transaction = slow.transaction()
            await transaction.start()
            await enqueue(slow, first)  # the lower ids, not committed yet
            await _publish(producer, second)  # the higher ids, committed and published first
            await transaction.commit()

        async def published() -> bool:
            return await producer.relay.backlog() == 0

        await eventually(published, what="the first events to be published after the second")
        by_id = f'SELECT topic, "offset" FROM {isolation}_producer.outbox ORDER BY id'  # noqa: S608
        offsets: dict[str, list[int]] = {}
        for r in await _query(stack, by_id):
            offsets.setdefault(r["topic"], []).append(r["offset"])
        assert all(offsets[t][0] > offsets[t][-1] for t in TOPICS)  # the situation this test is about: lower ids later

        assert await producer.broker_watch.check_once() == []
        assert producer.broker_watch.redriven_total == 0
    finally:
        await producer.stop()


async def test_a_safe_point_moves_only_over_events_published_before_the_broker_was_asked(stack, isolation):
    # The broker watch asks the broker without holding the relay lock, so the relay publishes meanwhile. Offsets
    # read during a check say nothing of events published after the outbox was read (they may be on a log that
    # began again): even offsets far past them must not carry the safe point over them.
    producer = _producer(isolation, stack, watch_seconds=3600.0)
    await producer.start()
    try:
        await _publish(producer, _one_per_topic(1))
        ids = f"SELECT id FROM {isolation}_producer.outbox ORDER BY id"  # noqa: S608 - the test's own schema
        before = [r["id"] for r in await _query(stack, ids)]
        watch = producer.broker_watch
        assert watch is not None
        asked = watch._committed  # noqa: SLF001 - the step between reading the outbox and acting on it

        async def published_meanwhile(partitions: dict[str, list[int]]) -> dict[str, list[int]]:
            await _publish(producer, _one_per_topic(2))
            return {topic: [10**9] * len(offsets) for topic, offsets in (await asked(partitions)).items()}

        watch._committed = published_meanwhile  # type: ignore[method-assign]  # noqa: SLF001
        assert await watch.check_once() == []
        assert len(await _query(stack, ids)) == 2 * len(before)
        [(safe,)] = await _query(stack, f"SELECT max(safe_id) FROM {isolation}_producer.outbox_safe_point")  # noqa: S608
        assert safe == max(before)  # over the first events, which every consumer has committed past; not beyond
    finally:
        await producer.stop()


async def test_a_log_that_began_again_while_the_broker_was_asked_is_seen_under_the_relay_lock(stack, isolation):
    # The broker is asked without the relay lock, and the outbox rows read before that are looked at then. Rows
    # the relay publishes meanwhile may land on a log that began again, at the offsets of rows it lost: the step
    # under the lock looks at the passes published since the outbox was read, and re-drives rather than move a
    # safe point on offsets read from the new log.
    async with _lost_then_newer(stack, isolation) as (producer, consumer, lost, newer):
        watch = producer.broker_watch
        assert watch is not None
        asked = watch._committed  # noqa: SLF001 - the step between reading the outbox and acting on it

        async def restarted_meanwhile(partitions: dict[str, list[int]]) -> dict[str, list[int]]:
            _restart_broker(stack)
            await _publish(producer, newer)  # offset 0 of every topic again, where the lost ones were
            return await asked(partitions)

        watch._committed = restarted_meanwhile  # type: ignore[method-assign]  # noqa: SLF001
        losses = await watch.check_once()
        # Seen on the topics whose new rows took a lost one's partition (a topic re-created on the new log may
        # get other partitions: the next check finds those by their last record, as before).
        assert losses and {loss.reason for loss in losses} == {"its offsets began again below ours"}
        watch._committed = asked  # type: ignore[method-assign]  # noqa: SLF001
        await watch.check_once()

        await consumer.start()
        await _each_once(stack, isolation, lost + newer, producer)


@asynccontextmanager
async def _lost_then_newer(
    stack, isolation: str
) -> AsyncIterator[tuple[Runtime, Runtime, list[CloudEvent], list[CloudEvent]]]:
    """A producer (its watch left to the test) that has published `lost`, one event a topic, and a consumer not
    yet started; `newer` has the same key, so it goes to the same partitions as `lost`. Both stopped after."""
    producer = _producer(isolation, stack, watch_seconds=3600.0)
    await producer.start()
    consumer = _consumer(isolation, stack)
    try:
        lost = _one_per_topic(1, subject="incident-1")
        await _publish(producer, lost)
        yield producer, consumer, lost, _one_per_topic(2, subject="incident-1")
    finally:
        await consumer.stop()
        await producer.stop()


async def _query(stack, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(stack.admin_dsn)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


async def test_a_consumer_whose_offsets_vanished_reads_everything_again_and_processes_nothing_twice(stack, isolation):
    # A consumer that never runs ("absent") holds every safe point: all retained events are re-driven.
    async with _Pipeline(stack, isolation, consumers=("sample", "absent")) as pipeline:
        producer = pipeline.producer
        events = _one_per_topic(1)
        await _publish(producer, events)
        await _effects_of(stack, isolation, events)
        await pipeline.consumer.stop()
        await pipeline.restart_broker_then_consumer()

        seen: list[tuple[int, int]] = []

        async def redriven_and_read_again() -> bool:
            # At least once: a send retried after the restart may have landed twice; the inbox copes.
            held, committed = await _end_offsets(stack, isolation), await _committed(stack, isolation, "sample")
            seen.append((held, committed))
            return producer.broker_watch.redriven_total >= len(events) and committed >= held >= len(events)

        try:
            await eventually(redriven_and_read_again, timeout=60, what="the events to be re-driven and read again")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}: redriven {producer.broker_watch.redriven_total}, checks {producer.broker_watch.checks_total},"
                f" failures {producer.broker_watch.check_failures_total}, (held, committed) last {seen[-3:]},"
                f" all safe {await _safe_everywhere(stack, isolation)}"
            ) from None
        assert await effects(stack.admin_dsn, f"{isolation}_sample") == {e.id: 1 for e in events}
        assert pipeline.consumer.consumer.processed_total == 0  # every repeat was absorbed by the inbox


async def test_events_every_consumer_has_committed_past_are_not_redriven_after_a_broker_restart(stack, isolation):
    async with _Pipeline(stack, isolation) as pipeline:
        events = _one_per_topic(1)
        await _publish(pipeline.producer, events)
        await _effects_of(stack, isolation, events)
        await eventually(lambda: _safe_everywhere(stack, isolation), timeout=30, what="the safe points to pass them")
        await pipeline.consumer.stop()
        await pipeline.restart_broker_then_consumer()
        await asyncio.sleep(3.0)  # several watch intervals
        assert pipeline.producer.broker_watch.redriven_total == 0
        assert await effects(stack.admin_dsn, f"{isolation}_sample") == {e.id: 1 for e in events}


async def test_the_redrive_command_over_a_consumed_period_changes_nothing_downstream(stack, isolation):
    async with _Pipeline(stack, isolation) as pipeline:
        since = datetime.now(UTC)
        events = _one_per_topic(1)
        await _publish(pipeline.producer, events)
        await _effects_of(stack, isolation, events)
        before = await _end_offsets(stack, isolation)
        env = {
            **os.environ, "DATABASE_URL": stack.admin_dsn, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
            "TOPIC_PREFIX": f"{isolation}.", "DB_SCHEMA": f"{isolation}_producer", "LOG_LEVEL": "warning",
        }
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "common.redrive", "--service", "producer", "--since", since.isoformat()],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )
        assert done.returncode == 0, done.stderr
        assert f"re-drove {len(events)} events" in done.stdout
        assert f"{len(events)}/{len(events)}" in done.stderr  # the progress bar reached the end

        async def republished() -> bool:
            return await _end_offsets(stack, isolation) == before + len(events)

        await eventually(republished, what="the events to be published again")
        await asyncio.sleep(2.0)
        assert await effects(stack.admin_dsn, f"{isolation}_sample") == {e.id: 1 for e in events}


async def test_the_redrive_command_says_what_is_wrong_with_its_arguments():
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "common.redrive", "--service", "triage", "--since", "yesterday"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert "'yesterday' is not a time: use ISO 8601" in done.stderr


async def _partitions(stack, isolation: str) -> list[TopicPartition]:
    """Every partition the broker has of this test's topics. A topic a client's metadata request brought back
    after a restart has the broker's default partition count, not the 3 the services create, so events keyed
    as before can land on partition 3 or beyond."""
    found = await topic_partitions(stack.bootstrap, {f"{isolation}.{t}" for t in TOPICS})
    return [TopicPartition(topic, p) for topic, ps in sorted(found.items()) for p in ps]


async def _committed(stack, isolation: str, group: str) -> int:
    offsets = await committed_offsets(stack.bootstrap, f"{isolation}.{group}", await _partitions(stack, isolation))
    return sum(o or 0 for o in offsets.values())


async def _end_offsets(stack, isolation: str) -> int:
    """How many records the broker holds on the product's topics under this test's prefix."""
    tps = await _partitions(stack, isolation)
    if not tps:
        return 0
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap)
    await consumer.start()
    try:
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


async def test_a_consumer_whose_offsets_outlived_the_log_reads_the_new_log_from_its_start(stack, isolation):
    # A batch fetched before a broker restart and committed after it leaves the group's offsets of the old log
    # on the new, empty one. Tansu answers a fetch beyond the end with nothing (not OffsetOutOfRange), so the
    # reset policy never fires: without the rewind, everything the new log holds below those offsets is skipped.
    async with _Pipeline(stack, isolation) as pipeline:
        before = _one_per_topic(1)
        await _publish(pipeline.producer, before)
        await _effects_of(stack, isolation, before)
        await pipeline.consumer.stop()
        _restart_broker(stack)
        await _commit_for(stack, f"{isolation}.sample", [f"{isolation}.{t}" for t in TOPICS], offset=50)

        pipeline.consumer = _consumer(isolation, stack)
        await pipeline.consumer.start()
        after = _one_per_topic(2)
        await _publish(pipeline.producer, after)

        await _effects_of(stack, isolation, before + after, pipeline.producer)
        assert await effects(stack.admin_dsn, f"{isolation}_sample") == {e.id: 1 for e in before + after}
        assert pipeline.consumer.consumer.rewinder.rewound_total >= 1


async def _commit_for(stack, group: str, topics: list[str], offset: int) -> None:
    """Commit `offset` for `group` on every partition of `topics` (made with the services' 3 partitions)."""
    await ensure_topics(stack.bootstrap, topics, 3)
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(3)]
        consumer.assign(tps)
        await consumer.commit(dict.fromkeys(tps, offset))
    finally:
        await consumer.stop()


async def test_the_watch_reads_the_rows_not_yet_known_safe_not_every_retained_row(stack, isolation):
    # Published rows stay for the retention period (seven days by default) and the watch looks every few seconds:
    # its statements must read by index what is not yet known safe, not the whole table (each was a full scan,
    # 0.3-0.7 s at 300,000 rows).
    producer = _producer(isolation, stack)
    await producer.start()
    await producer.stop()  # its schema, migrated; nothing else running on it
    schema = f"{isolation}_producer"
    conn = await asyncpg.connect(stack.admin_dsn)
    try:
        await conn.execute(f"SET search_path = {schema}")
        await conn.execute(
            "INSERT INTO outbox (event_id, topic, key, value, headers, published_at, partition, \"offset\","
            " published_pass) SELECT 'e' || g, 't' || (g % 6), 'k', convert_to(repeat('x', 2000), 'UTF8'), '[]',"
            " now(), g % 3, g / 18, g / 100 FROM generate_series(1, 20000) AS g"
        )
        await conn.execute("INSERT INTO outbox_safe_point (topic, safe_id) SELECT 't' || t, 19900 FROM"
                           " generate_series(0, 5) AS t")
        await conn.execute("ANALYZE outbox")
        pages = await conn.fetchval("SELECT pg_relation_size('outbox') / current_setting('block_size')::int")
        statements = {
            "published up to": (broker_watch._PUBLISHED_UP_TO, ()),  # noqa: SLF001
            "last unsafe": (broker_watch._LAST_UNSAFE, ()),  # noqa: SLF001
            "began again": (broker_watch._LOG_BEGAN_AGAIN, ()),  # noqa: SLF001
            "published since": (broker_watch._PUBLISHED_SINCE, (199, ["t1"], [0], [1110])),  # noqa: SLF001
            "latest publishing pass": (broker_watch._LATEST_PUBLISHING, ()),  # noqa: SLF001
        }
        read = {}
        for name, (sql, args) in statements.items():
            plan = json.loads(await conn.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, *args))[0]["Plan"]
            read[name] = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
    finally:
        await conn.close()
    assert pages > 4000
    assert all(blocks < pages / 20 for blocks in read.values()), (read, pages)
