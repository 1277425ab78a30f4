"""The metadata the publisher returns for a batch of records is each record's own (the relay stores it, and the
broker watch reads it to tell a lost event), and an incident's records stay in one partition, in order."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition

from common.kafka import Publisher, ensure_topics

Stored = dict[tuple[str, int, int], tuple[bytes, bytes]]


async def _everything(bootstrap: str, topics: list[str], partitions: int, expect: int) -> Stored:
    """(topic, partition, offset) -> (key, value) for every record the broker holds on `topics`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    seen: Stored = {}
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while len(seen) < expect and loop.time() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=300)).items():
                seen.update(((tp.topic, tp.partition, r.offset), (r.key or b"", r.value or b"")) for r in records)
    finally:
        await consumer.stop()
    return seen


async def test_each_record_gets_its_own_partition_and_offset_and_a_key_keeps_its_order(stack, isolation):
    topics = [f"{isolation}.incidents.reported", f"{isolation}.notifications.requested"]
    await ensure_topics(stack.bootstrap, topics, 3)
    # 2 KB values, 400 of them: more than one 256 KiB record batch for some partitions, over two topics.
    records = [
        (topics[i % 2], f"incident-{i % 7}".encode(), f"{i:04d}".encode() + b"." * 2048, [("ce_type", b"t")])
        for i in range(400)
    ]
    publisher = Publisher(stack.bootstrap, topics, 3)
    try:
        first = await publisher.send_batch(records[:1])  # a lone record too
        rest = await publisher.send_batch(records[1:])
    finally:
        await publisher.close()
    metadata = first + rest
    assert len(metadata) == len(records)

    stored = await _everything(stack.bootstrap, topics, 3, expect=len(records))
    assert len(stored) == len(records)
    for (topic, key, value, _), m in zip(records, metadata, strict=True):
        assert (m.topic, stored[(m.topic, m.partition, m.offset)]) == (topic, (key, value))
    by_key: dict[tuple[str, bytes], list[tuple[int, int]]] = {}
    for (topic, key, _, _), m in zip(records, metadata, strict=True):
        by_key.setdefault((topic, key), []).append((m.partition, m.offset))
    for places in by_key.values():
        assert len({p for p, _ in places}) == 1  # one partition per key
        assert [o for _, o in places] == sorted(o for _, o in places)  # in the order sent
