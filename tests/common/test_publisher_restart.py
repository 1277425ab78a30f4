"""A publisher that outlives a broker restart must not write to a topic the new broker has not created yet.

aiokafka reconnects by itself and keeps its old metadata, so its first produce after a restart can reach a
broker that has no such topic. Tansu 0.6.0 stores the records anyway; when the topic is then created (by a
service's CreateTopics, or by any client's metadata request) it sets the partition's offset counter back to
0 over them. Later batches are written over the old offsets, and a consumer reading on from a batch that
came first never sees the records that shared its offsets (make test's chaos run: reports never audited).
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from common.kafka import Publisher, ensure_topics


async def _send_until_accepted(publisher: Publisher, topic: str, values: list[bytes]) -> list[int]:
    """Offsets the broker gave `values`, sent as one batch; retried while the broker is coming back."""
    for _ in range(50):
        try:
            metadata = await publisher.send_batch([(topic, b"key", v, []) for v in values])
        except (KafkaError, OSError, TimeoutError):
            await asyncio.sleep(0.2)
            continue
        return [m.offset for m in metadata]
    raise AssertionError(f"the broker never accepted {values}")


async def _read_from_start(bootstrap: str, topic: str, expect: int) -> dict[int, bytes]:
    """The partition as a consumer reading it from offset 0 sees it: offset -> value."""
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    seen: dict[int, bytes] = {}
    try:
        consumer.assign([tp])
        consumer.seek(tp, 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while len(seen) < expect and loop.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                seen.update((r.offset, r.value or b"") for r in records)
    finally:
        await consumer.stop()
    return seen


async def test_a_publisher_across_a_broker_restart_creates_its_topic_before_it_produces(stack, isolation):
    topic = f"{isolation}.incidents.reported"
    publisher = Publisher(stack.bootstrap, [topic], 1)
    try:
        await _send_until_accepted(publisher, topic, [b"before the restart"])
        stack.stop_broker()
        stack.start_broker()
        acknowledged: dict[int, bytes] = {}
        batch = [f"first batch {i}".encode() for i in range(5)]  # one produce request: one stored batch
        acknowledged.update(zip(await _send_until_accepted(publisher, topic, batch), batch, strict=True))
        await ensure_topics(stack.bootstrap, [topic], 1)  # another service sees the topic missing and creates it
        for i in range(6):
            value = f"single {i}".encode()
            acknowledged.update(zip(await _send_until_accepted(publisher, topic, [value]), [value], strict=True))

        assert len(acknowledged) == 11, f"two records were given the same offset: {acknowledged}"
        assert await _read_from_start(stack.bootstrap, topic, expect=11) == acknowledged
    finally:
        await publisher.close()
