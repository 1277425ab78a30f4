"""A consumer batch appended at once: repeats stored once, several schools each in their own order, two
appenders at the same time never forking a chain, and a batch that fails half-way leaving nothing behind."""

from __future__ import annotations

import asyncio
import random
from itertools import zip_longest

import asyncpg
import pytest
from aiokafka.structs import ConsumerRecord
from support.helpers import eventually, produce

from audit.chain import canonical_event_bytes, verify_chain
from audit.replay import live_states, rebuilt_states
from audit.store import Entry, append_many, chain_head, load_records, store_deliveries
from common.consumer import Delivery
from common.events import CloudEvent, new_event
from common.topics import EventType, Topic

from .service_support import audit_settings, incident_events, log_events, running


def delivery(event: CloudEvent, topic: str | None = None, offset: int = 0) -> Delivery:
    value = event.to_bytes()
    record = ConsumerRecord(
        topic=topic or event.topic.value, partition=0, offset=offset, timestamp=0, timestamp_type=0,
        key=event.key, value=value, checksum=None, serialized_key_size=len(event.key or b""),
        serialized_value_size=len(value), headers=[],
    )
    return Delivery(record, topic or event.topic.value, event, None)


async def test_a_batch_with_repeats_stores_each_event_once(stack, isolation, tmp_path):
    settings = audit_settings(isolation, stack, tmp_path)
    school = "school-dup"
    first, second, third, *_ = incident_events(school, "inc-dup")
    async with running(settings) as (app, _):
        pool = app.state.runtime.pool
        await log_events(pool, [first])  # already in the log before the batch
        batch = [
            delivery(second), delivery(third), delivery(second),  # a repeat inside the batch
            delivery(first),  # a repeat of what the log holds
            delivery(second, Topic.INCIDENTS_REPORTED.dlq),  # its dead letter: a fact of its own
        ]
        async with pool.acquire() as conn:
            async with conn.transaction():
                await store_deliveries(batch, conn)
            records = await load_records(conn, school)
            live = await live_states(conn, school)
            rebuilt = await rebuilt_states(conn, school)
    assert [(r.seq, r.event_id) for r in records] == [
        (1, first.id), (2, second.id), (3, third.id), (4, f"{Topic.INCIDENTS_REPORTED.dlq}:{second.id}"),
    ]
    assert verify_chain(records).intact_up_to == 4
    assert live == rebuilt and live["inc-dup"]["events"] == 3


async def test_a_batch_spanning_several_schools_keeps_each_schools_order(stack, isolation, tmp_path):
    settings = audit_settings(isolation, stack, tmp_path)
    schools = ["school-s1", "school-s2", "school-s3"]
    lives = {s: incident_events(s, f"inc-{s}") for s in schools}
    async with running(settings) as (app, _):
        pool = app.state.runtime.pool
        await log_events(pool, lives["school-s2"][:2])  # one school's chain already has a head
        # interleaved as a partition would carry them: s1, s2, s3, s1, s2, s3, ...
        rest = {s: (events[2:] if s == "school-s2" else events) for s, events in lives.items()}
        interleaved = [e for group in zip_longest(*rest.values()) for e in group if e is not None]
        async with pool.acquire() as conn:
            async with conn.transaction():
                await store_deliveries([delivery(e) for e in interleaved], conn)
            stored = {s: await load_records(conn, s) for s in schools}
            projections = {s: (await live_states(conn, s), await rebuilt_states(conn, s)) for s in schools}
    for school, events in lives.items():
        records = stored[school]
        assert [r.event_id for r in records] == [e.id for e in events], school  # in the order given
        assert [r.seq for r in records] == list(range(1, len(events) + 1)), school
        assert verify_chain(records).intact_up_to == len(events), school
        live, rebuilt = projections[school]
        assert live == rebuilt and live[f"inc-{school}"]["events"] == len(events), school


async def test_two_appenders_at_once_never_fork_a_chain(stack, isolation, tmp_path):
    """Four connections (as two audit processes would have) append overlapping batches for two schools at
    the same time; each event ends up once and each chain is one unbroken line."""
    settings = audit_settings(isolation, stack, tmp_path)
    schools = ["school-race-a", "school-race-b"]
    payload = canonical_event_bytes(incident_events("school-race-a", "inc-race")[0])
    entries = [Entry(schools[i % 2], f"race-{i}", "incidents.reported", payload) for i in range(240)]

    async def appender(pool: asyncpg.Pool, seed: int) -> int:
        rng = random.Random(seed)
        written = 0
        async with pool.acquire() as conn:
            for start in range(0, len(entries), 12):
                batch = entries[start:start + 12]
                if rng.random() < 0.5:  # schools met in the other order, too
                    batch = sorted(batch, key=lambda e: e.school_id, reverse=True)
                async with conn.transaction():
                    written += len(await append_many(conn, batch))
                await asyncio.sleep(0)
        return written

    async with running(settings) as (app, _):
        pool = app.state.runtime.pool
        written = await asyncio.gather(*(appender(pool, seed) for seed in range(4)))
        async with pool.acquire() as conn:
            stored = {s: await load_records(conn, s) for s in schools}
    assert sum(written) == len(entries)  # every event written by exactly one appender
    for school in schools:
        records = stored[school]
        assert len({r.event_id for r in records}) == len(records) == len(entries) // 2
        assert [r.seq for r in records] == list(range(1, len(records) + 1))
        assert verify_chain(records).intact_up_to == len(records), school


async def test_a_failure_half_way_through_a_batch_leaves_nothing_written(stack, isolation, tmp_path):
    settings = audit_settings(isolation, stack, tmp_path)
    good = incident_events("school-f1", "inc-f1")
    before = incident_events("school-f2", "inc-f2")
    # PostgreSQL's jsonb refuses \u0000: this event's row is written, then its projection fails
    poison = new_event(EventType.INCIDENT_REPORTED, source="tests", subject="inc-f3", schoolid="school-f2",
                       data={"incident_id": "inc-f3", "reference": "OSI-\x00"}, event_id="poison-1")
    async with running(settings) as (app, _):
        pool = app.state.runtime.pool
        await log_events(pool, before[:2])
        async with pool.acquire() as conn:
            head = await chain_head(conn, "school-f2")
            with pytest.raises(asyncpg.PostgresError, match="u0000"):
                async with conn.transaction():
                    await store_deliveries([delivery(e) for e in [*good, before[2], poison]], conn)
            assert await conn.fetchval("SELECT count(*) FROM audit_records WHERE school_id = 'school-f1'") == 0
            assert await chain_head(conn, "school-f2") == head
            assert await conn.fetchval("SELECT count(*) FROM incident_projection WHERE school_id = 'school-f1'") == 0
            assert (await live_states(conn, "school-f2"))["inc-f2"]["events"] == 2
            async with conn.transaction():  # the same batch without the poison goes on from the same heads
                await store_deliveries([delivery(e) for e in [*good, before[2]]], conn)
            f1, f2 = await load_records(conn, "school-f1"), await load_records(conn, "school-f2")
    assert [r.event_id for r in f1] == [e.id for e in good]
    assert [r.event_id for r in f2] == [e.id for e in before[:3]]
    assert verify_chain(f1).ok and verify_chain(f2).intact_up_to == 3


async def test_a_poison_event_in_a_consumed_batch_is_dead_lettered_and_the_rest_land_once_in_order(
    stack, isolation, tmp_path
):
    """Through the consumer runner: the failed batch is rolled back whole, re-run one event at a time, the
    poison goes to the dead-letter topic (and from there into the log as a dead letter), the others land once."""
    settings = audit_settings(isolation, stack, tmp_path)
    school, schema = "school-poison", f"{isolation}_audit"
    good = [new_event(EventType.INCIDENT_REPORTED, source="tests", subject="inc-p", schoolid=school,
                      data={"incident_id": "inc-p", "n": n}, event_id=f"good-{n}") for n in range(4)]
    poison = new_event(EventType.INCIDENT_REPORTED, source="tests", subject="inc-p", schoolid=school,
                       data={"incident_id": "inc-p", "reference": "OSI-\x00"}, event_id="poison-2")
    values = [e.to_bytes() for e in [*good[:2], poison, *good[2:]]]
    dead_letter_id = f"{Topic.INCIDENTS_REPORTED.dlq}:{isolation}.audit:{poison.id}"  # audit dead-lettered it

    async def rows() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(stack.admin_dsn)
        try:
            return await conn.fetch(
                f"SELECT seq, event_id, topic FROM {schema}.audit_records WHERE school_id = $1 ORDER BY seq",  # noqa: S608
                school,
            )
        finally:
            await conn.close()

    async with running(settings, consume=True) as (app, _):
        await produce(stack.bootstrap, f"{isolation}.{Topic.INCIDENTS_REPORTED}", values, key=b"inc-p")

        async def landed() -> bool:
            return dead_letter_id in {r["event_id"] for r in await rows()}

        await eventually(landed, timeout=60, what="the poison event's dead letter in the log")
        async with app.state.runtime.pool.acquire() as conn:
            records = await load_records(conn, school)
            live = await live_states(conn, school)
    stored = await rows()
    assert [r["event_id"] for r in stored if r["topic"] == Topic.INCIDENTS_REPORTED] == [e.id for e in good]
    assert [r["event_id"] for r in stored if r["topic"] == Topic.INCIDENTS_REPORTED.dlq] == [dead_letter_id]
    assert [r["seq"] for r in stored] == list(range(1, len(good) + 2))
    assert verify_chain(records).ok
    assert live["inc-p"]["events"] == len(good)  # the poison never reached the projection
