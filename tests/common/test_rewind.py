"""A consumer whose partition's log began again under it (a broker restarted empty) reads it from the start."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from common.kafka import ensure_topics
from common.rewind import Rewinder


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, partition=0)
    finally:
        await producer.stop()


async def _read(consumer: AIOKafkaConsumer, rewinder: Rewinder, want: set[bytes], seconds: float) -> list[bytes]:
    """Poll as the consumer runner does (note what was handled, then let the rewinder look) until `want` is read."""
    seen: list[bytes] = []
    deadline = asyncio.get_running_loop().time() + seconds
    while not want <= set(seen) and asyncio.get_running_loop().time() < deadline:
        batch = await consumer.getmany(timeout_ms=100)
        seen += [r.value for records in batch.values() for r in records if r.value is not None]
        if batch:
            rewinder.handled(batch)
        await rewinder.after_poll(consumer)
    return seen


@asynccontextmanager
async def _a_consumer_that_read_the_old_log(
    stack, isolation: str, old: list[bytes], read_back_seconds: float
) -> AsyncIterator[tuple[AIOKafkaConsumer, Rewinder, TopicPartition]]:
    """A group member assigned partition 0 of a fresh topic, having read `old` there; then the broker restarts
    empty and the topic is made again."""
    topic = f"{isolation}.incidents.reported"
    tp = TopicPartition(topic, 0)
    await ensure_topics(stack.bootstrap, [topic], 1)
    await _produce(stack.bootstrap, topic, old)
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=f"{isolation}.sample",
                                enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=20)
    await consumer.start()
    rewinder = Rewinder(stack.bootstrap, f"{isolation}.sample", read_back_seconds=read_back_seconds)
    try:
        consumer.assign([tp])
        assert await _read(consumer, rewinder, set(old), 20) == old
        stack.stop_broker()
        stack.start_broker()
        await ensure_topics(stack.bootstrap, [topic], 1)
        yield consumer, rewinder, tp
    finally:
        await rewinder.stop()
        await consumer.stop()


async def test_a_log_that_began_again_and_grew_past_the_old_position_is_read_from_its_start(stack, isolation):
    # The new log is longer than the old position, so "position past the end" never shows: only reading back
    # the record last handled tells that the log is another one.
    old, new = [b"old-%d" % i for i in range(5)], [b"new-%d" % i for i in range(8)]
    async with _a_consumer_that_read_the_old_log(stack, isolation, old, read_back_seconds=0.2) as (
        consumer, rewinder, tp
    ):
        await _produce(stack.bootstrap, tp.topic, new)  # offsets 0-7: past the consumer's position (5)

        seen = await _read(consumer, rewinder, set(new), 30)
        assert set(new) <= set(seen), f"read only {seen}"
        assert rewinder.rewound_total == 1
        assert await consumer.committed(tp) is not None  # the start was committed over the stale offset


async def test_a_consumer_past_the_end_of_a_log_that_began_again_rewinds_at_once(stack, isolation):
    old, new = [b"old-%d" % i for i in range(6)], [b"new-%d" % i for i in range(2)]
    # No read-back within the test: the high watermark alone.
    async with _a_consumer_that_read_the_old_log(stack, isolation, old, read_back_seconds=3600.0) as (
        consumer, rewinder, tp
    ):
        await _produce(stack.bootstrap, tp.topic, new)  # offsets 0-1: the consumer waits at 6

        assert await _read(consumer, rewinder, set(new), 30) == new
        assert rewinder.rewound_total == 1
