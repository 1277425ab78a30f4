"""Test helpers for talking to the real broker and database directly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from common.events import CloudEvent, new_event
from common.topics import EventType


def report_event(n: int, **data: object) -> CloudEvent:
    return new_event(
        EventType.INCIDENT_REPORTED, source="tests", subject=f"incident-{n}", schoolid="school-a",
        data={"n": n, **data},
    )


async def produce(
    bootstrap: str, topic: str, values: list[bytes], key: bytes = b"k",
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for v in values:
            await producer.send(topic, v, key=key, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


Record = tuple[bytes, dict[str, bytes]]


async def read_topic(bootstrap: str, topic: str, expect: int, timeout: float = 20) -> list[Record]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", metadata_max_age_ms=1000
    )
    await consumer.start()
    got: list[Record] = []
    try:
        deadline = time.monotonic() + timeout
        while len(got) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                got += [(r.value or b"", dict(r.headers)) for r in records]
    finally:
        await consumer.stop()
    return got


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def effects(admin_dsn: str, schema: str) -> dict[str, int]:
    conn = await asyncpg.connect(admin_dsn)
    try:
        rows = await conn.fetch(f"SELECT event_id, n FROM {schema}.effects")  # noqa: S608 - test schema name
        return {r["event_id"]: r["n"] for r in rows}
    finally:
        await conn.close()
