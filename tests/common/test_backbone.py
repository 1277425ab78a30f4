"""The event backbone against a real broker and database: outbox, inbox, dead letters, shutdown, logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import asyncpg
import pytest
import structlog
from aiokafka import TopicPartition
from support.helpers import effects, eventually, produce, read_topic, report_event
from support.sample_service import EFFECTS, POISON_MARK, sample_runtime, settings_for

from common.consumer import BatchedHandler
from common.db import Connection
from common.events import CloudEvent
from common.incident import IncidentReport
from common.kafka import Publisher, committed_offsets, topic_partitions
from common.logging import configure
from common.outbox import OutboxRelay, enqueue
from common.runtime import Runtime, ServiceSpec
from common.topics import TopicNames
from devstack.ports import free_port


async def test_event_written_while_broker_is_down_is_delivered_once_after_it_returns(stack, isolation):
    stack.stop_broker()
    runtime = sample_runtime(settings_for(isolation, stack.admin_dsn, stack.bootstrap))
    try:
        await runtime.start()
        event = report_event(1)
        async with runtime.pool.acquire() as conn, conn.transaction():
            await enqueue(conn, [event])  # the write succeeds with no broker at all
        await asyncio.sleep(1.0)
        assert await runtime.relay.backlog() == 1
        stack.start_broker()
        await eventually(lambda: _has_effect(stack, isolation, event.id), what="the effect", timeout=45)
        await asyncio.sleep(1.0)
        assert await effects(stack.admin_dsn, f"{isolation}_sample") == {event.id: 1}
        assert await runtime.relay.backlog() == 0
    finally:
        stack.start_broker()
        await runtime.stop()


async def _has_effect(stack, isolation, event_id: str) -> bool:
    return event_id in await effects(stack.admin_dsn, f"{isolation}_sample")


@pytest.mark.parametrize("batched", [False, True], ids=["per-event", "batched"])
async def test_event_delivered_twice_has_exactly_one_effect(stack, isolation, batched):
    runtime = sample_runtime(settings_for(isolation, stack.admin_dsn, stack.bootstrap), batched=batched)
    await runtime.start()
    try:
        event, other = report_event(1), report_event(2)
        topic = f"{isolation}.incidents.reported"
        await produce(stack.bootstrap, topic, [event.to_bytes(), event.to_bytes(), other.to_bytes(), event.to_bytes()])
        await eventually(lambda: _has_effect(stack, isolation, other.id), what="both effects")
        await asyncio.sleep(0.5)
        assert await effects(stack.admin_dsn, f"{isolation}_sample") == {event.id: 1, other.id: 1}
        # /metrics: consuming (the count depends on who created the topic first), nothing left behind
        assert runtime.consumer.assigned_partitions > 0 and runtime.consumer.lag == 0
    finally:
        await runtime.stop()
    assert runtime.consumer.assigned_partitions == 0  # stopped: not "lag 0"


@pytest.mark.parametrize("batched", [False, True], ids=["per-event", "batched"])
async def test_malformed_and_poison_messages_go_to_the_dlq_and_the_next_good_one_is_processed(
    stack, isolation, batched
):
    runtime = sample_runtime(settings_for(isolation, stack.admin_dsn, stack.bootstrap), batched=batched)
    await runtime.start()
    try:
        poison, good = report_event(1, mark=POISON_MARK), report_event(2)
        topic = f"{isolation}.incidents.reported"
        await produce(stack.bootstrap, topic, [b"{not json", poison.to_bytes(), good.to_bytes()])
        await eventually(lambda: _has_effect(stack, isolation, good.id), what="the good event")
        dead = await read_topic(stack.bootstrap, f"{topic}.dlq", expect=2)
        assert len(dead) == 2
        by_value = {value: headers for value, headers in dead}
        assert b"not a valid CloudEvent" in by_value[b"{not json"]["dlq.error"]
        assert by_value[b"{not json"]["dlq.topic"] == b"incidents.reported"
        assert b"poison by design" in by_value[poison.to_bytes()]["dlq.error"]
        assert await effects(stack.admin_dsn, f"{isolation}_sample") == {good.id: 1}
        assert runtime.consumer.dead_lettered_total == 2
    finally:
        await runtime.stop()


@pytest.mark.parametrize("batched", [False, True], ids=["per-event", "batched"])
async def test_a_poison_message_alone_in_its_batch_is_dead_lettered_and_the_consumer_carries_on(
    stack, isolation, batched
):
    """A failing event that is the whole of its poll's batch (the everyday case at low rates) used to be raised
    out of the consumer: its task ended, and nothing more was consumed."""
    runtime = sample_runtime(settings_for(isolation, stack.admin_dsn, stack.bootstrap), batched=batched)
    await runtime.start()
    try:
        await eventually(lambda: _assigned(runtime), what="the consumer's partitions")
        poison, good = report_event(1, mark=POISON_MARK), report_event(2)
        topic = f"{isolation}.incidents.reported"
        await produce(stack.bootstrap, topic, [poison.to_bytes()])
        (dead,) = await read_topic(stack.bootstrap, f"{topic}.dlq", expect=1)
        assert b"poison by design" in dead[1]["dlq.error"]
        await produce(stack.bootstrap, topic, [good.to_bytes()])
        await eventually(lambda: _has_effect(stack, isolation, good.id), what="the next event's effect", timeout=15)
        assert runtime.consumer.dead_lettered_total == 1
    finally:
        await runtime.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_a_worker_stopped_during_a_batch_loses_nothing_and_duplicates_no_effect(stack, isolation, sig):
    events = [report_event(i, delay=0.004) for i in range(1200)]  # batches of 500 take about 2 s each
    # The schema and topics exist before the worker starts, so its first batch is a full one.
    setup = sample_runtime(settings_for(isolation, stack.admin_dsn, stack.bootstrap))
    await setup.start()
    await setup.stop()
    await produce(stack.bootstrap, f"{isolation}.incidents.reported", [e.to_bytes() for e in events])
    schema = f"{isolation}_sample"

    worker = _start_worker(stack, isolation)
    await eventually(lambda: _count_at_least(stack, schema, 1), what="the first batch")
    worker.send_signal(sig)  # now inside the second batch
    exit_code = worker.wait(timeout=30)
    assert exit_code == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    interrupted_at = len(await effects(stack.admin_dsn, schema))
    assert 0 < interrupted_at < len(events)

    worker = _start_worker(stack, isolation)
    try:
        await eventually(lambda: _count_at_least(stack, schema, len(events)), what="all events", timeout=60)
        await asyncio.sleep(1.0)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    done = await effects(stack.admin_dsn, schema)
    assert set(done) == {e.id for e in events}
    assert set(done.values()) == {1}


def _start_worker(stack, isolation) -> subprocess.Popen[bytes]:
    script = Path(__file__).parents[1] / "_lib" / "support" / "sample_service.py"
    env = {**os.environ, "PYTHONPATH": str(script.parents[1])}
    return subprocess.Popen([sys.executable, str(script), isolation, stack.admin_dsn, stack.bootstrap], env=env)


async def _count_at_least(stack, schema: str, n: int) -> bool:
    try:
        return len(await effects(stack.admin_dsn, schema)) >= n
    except asyncpg.UndefinedTableError:
        return False


@pytest.mark.parametrize("batched", [False, True], ids=["per-event", "batched"])
async def test_log_line_while_handling_an_event_with_a_pupils_name_carries_no_trace_of_it(
    stack, isolation, capsys, batched
):
    name, dob = "Amelia Hartley-Quinn", "2014-03-09"
    log = structlog.get_logger("test")
    seen: list[str] = []

    async def careless_handler(event: CloudEvent, conn: Connection) -> None:
        pupil = event.data["report"]["subjects"][0]
        log.info("handling", note=f"report about {pupil['name']} born {pupil['date_of_birth']}")
        log.info("whole report", report=event.data["report"], first=pupil["name"].split()[0])
        seen.append(event.id)

    async def careless_batch(events: Sequence[CloudEvent], conn: Connection) -> None:
        for event in events:
            await careless_handler(event, conn)

    configure("tests", fmt="json", level="info")
    settings = settings_for(isolation, stack.admin_dsn, stack.bootstrap)
    handler = BatchedHandler(careless_batch) if batched else careless_handler
    runtime = Runtime(ServiceSpec(settings, [EFFECTS], handlers={"incidents.reported": handler}))
    await runtime.start()
    try:
        event = report_event(1, report={"subjects": [{"kind": "pupil", "name": name, "date_of_birth": dob}]})
        await produce(stack.bootstrap, f"{isolation}.incidents.reported", [event.to_bytes()])
        await eventually(lambda: _true_if(seen), what="the handler")
    finally:
        await runtime.stop()
        configure("tests", fmt="json", level="warning")
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    handled = [line for line in lines if line.get("event") in {"handling", "whole report"}]
    assert len(handled) == 2
    # Per event, its ids label the line; a batch's lines say how many events it held.
    assert all((line["events"] == 1) if batched else (line["incident_id"] == "incident-1") for line in handled)
    for fragment in (name, "Amelia", "Hartley-Quinn", dob):
        assert fragment not in out


async def _true_if(items: list[str]) -> bool:
    return bool(items)


async def test_a_service_stopped_while_its_consumer_joins_the_group_stops_at_once(stack, isolation):
    runtime = sample_runtime(settings_for(isolation, stack.admin_dsn, stack.bootstrap))
    await runtime.start()
    await asyncio.sleep(0.3)  # the consumer is still joining (Tansu holds a JoinGroup about 5 s)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await runtime.stop()
    assert loop.time() - started < 2.0


async def test_the_relay_lets_go_of_its_lock_after_every_pass_failed_or_not(stack, isolation):
    """The relay holds the relay lock only for a pass: after a pass that failed on a dead broker, and after one
    that published, another session can take it (the broker watch must)."""
    settings = settings_for(isolation, stack.admin_dsn, stack.bootstrap)
    runtime = sample_runtime(settings)
    await runtime.start()  # migrates the schema
    await runtime.stop()  # its own relay must not take part
    schema, lock = settings.schema_name, "SELECT pg_try_advisory_lock(hashtext($1)), pg_advisory_unlock_all()"
    pool = await asyncpg.create_pool(  # like the services' pools, it keeps session state on release
        stack.admin_dsn, min_size=1, max_size=1, server_settings={"search_path": schema}, reset=_keep_session
    )
    other = await asyncpg.connect(stack.admin_dsn)
    dead = Publisher(f"127.0.0.1:{free_port()}", [f"{isolation}.incidents.reported"], 1)
    alive = Publisher(stack.bootstrap, [f"{isolation}.incidents.reported"], 1)
    try:
        event = report_event(1)
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, [event])
        with pytest.raises(Exception):  # noqa: B017, PT011 - whichever way the client reports no broker
            await OutboxRelay(pool, dead, TopicNames(f"{isolation}."), schema=schema).publish_pending()
        assert (await other.fetchrow(lock, f"outbox-relay:{schema}"))[0] is True
        relay = OutboxRelay(pool, alive, TopicNames(f"{isolation}."), schema=schema)
        assert await relay.publish_pending() == 1
        assert (await other.fetchrow(lock, f"outbox-relay:{schema}"))[0] is True
        assert [v for v, _ in await read_topic(stack.bootstrap, f"{isolation}.incidents.reported", expect=1)] == [
            event.to_bytes()
        ]
    finally:
        await dead.close()
        await alive.close()
        await other.close()
        await pool.close()


async def _keep_session(_: asyncpg.Connection) -> None:
    """No reset on release (asyncpg's default would release every advisory lock)."""


async def test_what_a_consumer_handled_is_committed_so_a_restart_does_not_read_it_again(stack, isolation):
    """Offsets are committed batch by batch, once the batch's effects are durable."""
    runtime = sample_runtime(settings_for(isolation, stack.admin_dsn, stack.bootstrap))
    await runtime.start()
    events = [report_event(i) for i in range(3)]
    topic = f"{isolation}.incidents.reported"
    try:
        await eventually(lambda: _assigned(runtime), what="the consumer's partitions")
        await produce(stack.bootstrap, topic, [e.to_bytes() for e in events], key=b"one-partition")
        await eventually(lambda: _has_effect(stack, isolation, events[-1].id), what="the effects")
    finally:
        await runtime.stop()
    partitions = (await topic_partitions(stack.bootstrap, [topic]))[topic]
    tps = [TopicPartition(topic, p) for p in partitions]
    found = await committed_offsets(stack.bootstrap, f"{isolation}.sample", tps)
    assert sorted(o for o in found.values() if o is not None) == [3]


async def _assigned(runtime: Runtime) -> bool:
    return runtime.consumer is not None and runtime.consumer.assigned_partitions > 0


async def test_an_event_committed_while_the_relay_lock_is_held_elsewhere_goes_out_as_soon_as_it_is_let_go(
    stack, isolation
):
    """The broker watch holds the relay lock while it compares the outbox with the broker. An event committed
    meanwhile is not left waiting for the next NOTIFY or poll (30 s here) once the lock is free."""
    settings = settings_for(isolation, stack.admin_dsn, stack.bootstrap).model_copy(
        update={"outbox_poll_seconds": 30.0}
    )
    runtime = sample_runtime(settings)
    await runtime.start()
    holder = await asyncpg.connect(stack.admin_dsn)
    try:
        await eventually(lambda: _assigned(runtime), what="the consumer's partitions")
        holder_xact = holder.transaction()
        await holder_xact.start()
        await holder.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"outbox-relay:{settings.schema_name}")
        event = report_event(1)
        async with runtime.pool.acquire() as conn, conn.transaction():
            await enqueue(conn, [event])  # its NOTIFY wakes the relay, which finds the lock held
        await asyncio.sleep(0.5)
        assert await runtime.relay.backlog() == 1
        await holder_xact.rollback()  # the lock is let go
        await eventually(lambda: _has_effect(stack, isolation, event.id), what="the effect", timeout=10)
    finally:
        await holder.close()
        await runtime.stop()


async def test_event_values_of_a_few_kilobytes_stay_in_the_outbox_row_uncompressed(stack, isolation):
    """A requested or triaged event (2-3 KB) is written and read once: it is kept in the row as it is, not
    compressed on insert and decompressed by the relay (migration 0003)."""
    settings = settings_for(isolation, stack.admin_dsn, stack.bootstrap)
    runtime = sample_runtime(settings)
    await runtime.start()  # migrates the schema
    await runtime.stop()
    conn = await asyncpg.connect(stack.admin_dsn, server_settings={"search_path": settings.schema_name})
    try:
        event = report_event(1, description="a description that repeats itself " * 100)  # ~3.5 KB, compressible
        async with conn.transaction():
            await enqueue(conn, [event])
        raw, stored, toasted = await conn.fetchrow(
            "SELECT octet_length(value), pg_column_size(value), pg_relation_size(reltoastrelid)"
            " FROM outbox, pg_class WHERE pg_class.oid = 'outbox'::regclass"
        )
        assert raw == len(event.to_bytes()) > 3000
        assert stored == raw + 4  # a plain varlena header: neither compressed nor moved out of the row
        assert toasted == 0
    finally:
        await conn.close()


async def _scalar(admin_dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(admin_dsn)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def _one_by_one(stack, isolation, runtime: Runtime, send_one: Callable[[CloudEvent], Awaitable[None]]) -> None:
    """Start the runtime, send 8 events one every 50 ms (over 0.4 s) with `send_one`, wait for the last one's
    effect, stop, and check that each event had its effect once."""
    events = [report_event(i) for i in range(8)]
    await runtime.start()
    try:
        await eventually(lambda: _assigned(runtime), what="the consumer's partitions")
        for event in events:
            await send_one(event)
            await asyncio.sleep(0.05)
        await eventually(lambda: _has_effect(stack, isolation, events[-1].id), what="the effects", timeout=10)
    finally:
        await runtime.stop()
    assert await effects(stack.admin_dsn, f"{isolation}_sample") == {e.id: 1 for e in events}


async def test_a_consumer_that_gathers_handles_what_arrives_meanwhile_in_one_batch(stack, isolation):
    """consumer_gather_ms (audit, intake's status): events arriving one by one are handled in a few transactions
    instead of one each, each within the gathering time of its arrival, and none is lost or doubled."""
    settings = settings_for(isolation, stack.admin_dsn, stack.bootstrap).model_copy(
        update={"consumer_gather_ms": 700}
    )

    async def produce_one(event: CloudEvent) -> None:
        await produce(stack.bootstrap, f"{isolation}.incidents.reported", [event.to_bytes()], key=b"one")

    await _one_by_one(stack, isolation, sample_runtime(settings, batched=True), produce_one)
    # Each batch is one transaction, which stamps the effects it writes with its id (xmin).
    batches = await _scalar(stack.admin_dsn, f"SELECT count(DISTINCT xmin::text) FROM {isolation}_sample.effects")  # noqa: S608
    assert batches <= 3, f"{batches} transactions for 8 events arriving within 0.7 s"


async def test_a_relay_that_lingers_publishes_what_commits_meanwhile_in_one_pass(stack, isolation):
    """outbox_linger_ms (notify's delivery outcomes): events committed one by one go out in a few passes."""
    settings = settings_for(isolation, stack.admin_dsn, stack.bootstrap).model_copy(
        update={"outbox_linger_ms": 700, "outbox_poll_seconds": 30.0}
    )
    runtime = sample_runtime(settings)

    async def commit_one(event: CloudEvent) -> None:  # each commit with its NOTIFY
        async with runtime.pool.acquire() as conn, conn.transaction():
            await enqueue(conn, [event])

    await _one_by_one(stack, isolation, runtime, commit_one)
    passes = await _scalar(stack.admin_dsn, f"SELECT count(DISTINCT published_pass) FROM {isolation}_sample.outbox")  # noqa: S608
    assert passes <= 3, f"{passes} relay passes for 8 events committed within 0.7 s"


async def test_a_dead_letter_and_its_log_line_carry_no_trace_of_the_pupil(stack, isolation, capsys):
    """A report that fails validation is dead-lettered with where and what is wrong. pydantic's own message
    quotes the input (a subject's name and date of birth); the dead letter's error header goes to audit, which
    keeps it for ever and shows it in governors' timelines, and the line goes to the logs."""
    name, dob = "Amelia Hartley-Quinn", "2014-03-09"

    async def strict_handler(event: CloudEvent, conn: Connection) -> None:
        IncidentReport.model_validate(event.data["report"])  # a subject without its kind: refused

    configure("tests", fmt="json", level="info")
    settings = settings_for(isolation, stack.admin_dsn, stack.bootstrap)
    runtime = Runtime(ServiceSpec(settings, [EFFECTS], handlers={"incidents.reported": strict_handler}))
    await runtime.start()
    topic = f"{isolation}.incidents.reported"
    try:
        event = report_event(1, report={"subjects": [{"name": name, "date_of_birth": dob}]})
        await produce(stack.bootstrap, topic, [event.to_bytes()])
        (dead,) = await read_topic(stack.bootstrap, f"{topic}.dlq", expect=1)
    finally:
        await runtime.stop()
        configure("tests", fmt="json", level="warning")
    error = dead[1]["dlq.error"].decode()
    assert error.startswith("ValidationError: school_id: Field required"), error
    out = capsys.readouterr().out
    assert "consumer.dead_lettered" in out
    for fragment in (name, "Amelia", "Hartley-Quinn", dob):
        assert fragment not in error and fragment not in out
