"""Backbone throughput: outbox -> broker -> consumer inbox -> effect, beside bare aiokafka (the ceiling)."""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from common.db import Connection, Migration
from common.events import CloudEvent, new_event
from common.outbox import enqueue
from common.runtime import Runtime, ServiceSpec
from common.settings import ServiceSettings
from common.topics import EventType

EFFECTS = Migration(
    "0001_effects",
    "CREATE TABLE effects (event_id text PRIMARY KEY); GRANT SELECT, INSERT ON effects TO @app_role@;",
)


def _events(n: int) -> list[CloudEvent]:
    return [
        new_event(EventType.INCIDENT_REPORTED, source="bench", subject=f"incident-{i}", schoolid="school-a",
                  data={"n": i, "padding": "x" * 120})
        for i in range(n)
    ]


async def bare_kafka(bootstrap: str, n: int) -> float:
    """Events/s for plain produce then consume of the same records on the same broker."""
    topic = f"bench-bare-{uuid.uuid4().hex[:8]}"
    values = [e.to_bytes() for e in _events(n)]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=topic, enable_auto_commit=False)
    await producer.start()
    await consumer.start()
    try:
        start = time.perf_counter()
        for v in values:
            await producer.send(topic, v, key=v[:16])
        await producer.flush()
        got = 0
        while got < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            got += sum(len(r) for r in batch.values())
        await consumer.commit()
        return n / (time.perf_counter() - start)
    finally:
        await producer.stop()
        await consumer.stop()


async def outbox_to_effect(admin_dsn: str, bootstrap: str, n: int) -> float:
    """Events/s from outbox rows committed, through the relay and broker, to effects committed."""
    name = "b" + uuid.uuid4().hex[:8]
    counted: list[int] = [0]
    done = asyncio.Event()

    async def effect(event: CloudEvent, conn: Connection) -> None:
        await conn.execute("INSERT INTO effects (event_id) VALUES ($1)", event.id)
        counted[0] += 1
        if counted[0] >= n:
            done.set()

    settings = ServiceSettings(service_name="bench", db_schema=f"{name}_bench", database_url=admin_dsn,
                               kafka_bootstrap_servers=bootstrap, topic_prefix=f"{name}.", outbox_poll_seconds=0.1)
    runtime = Runtime(ServiceSpec(settings, [EFFECTS], handlers={"incidents.reported": effect}))
    await runtime.start()
    try:
        await asyncio.sleep(3)  # let the consumer join its group before the clock starts
        events = _events(n)
        start = time.perf_counter()
        for i in range(0, n, 500):
            async with runtime.pool.acquire() as conn, conn.transaction():
                await enqueue(conn, events[i : i + 500])
        await asyncio.wait_for(done.wait(), timeout=300)
        return n / (time.perf_counter() - start)
    finally:
        await runtime.stop()
