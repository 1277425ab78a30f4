"""Kafka plumbing: a producer that survives broker restarts, and topic creation."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient, ConnectionGroup
from aiokafka.conn import AIOKafkaConnection, CloseReason
from aiokafka.errors import (
    KafkaError,
    NodeNotReadyError,
    OffsetOutOfRangeError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
)
from aiokafka.protocol.admin import CreateTopicsRequest
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.structs import RecordMetadata

from common.aio import cancelled_from_inside

log = structlog.get_logger(__name__)

REQUEST_TIMEOUT_MS = 8000


async def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    """Create any of `names` that the broker does not have (a restarted in-memory broker has none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=REQUEST_TIMEOUT_MS)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process was first
                await admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in missing]
                )
            log.info("kafka.topics_created", topics=len(missing))
    finally:
        await admin.close()


async def broker_reachable(bootstrap: str) -> None:
    """Raises if no broker answers a metadata request (used by /readyz)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()


async def topic_partitions(bootstrap: str, topics: Iterable[str]) -> dict[str, list[int]]:
    """The partitions of each of `topics` the broker has; a topic it lacks is absent from the answer."""
    wanted = set(topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=REQUEST_TIMEOUT_MS)
    await admin.start()
    try:
        present = wanted & set(await admin.list_topics())
        # Only topics known to exist are described: a metadata request may create a missing one.
        described = await admin.describe_topics(sorted(present)) if present else []
    finally:
        await admin.close()
    return {t["topic"]: sorted(p["partition"] for p in t["partitions"]) for t in described if t["error_code"] == 0}


async def records_at(
    bootstrap: str, positions: Mapping[TopicPartition, int], wait_seconds: float = 3.0
) -> dict[TopicPartition, bytes | None]:
    """The value of the record at each (partition, offset), or None where the broker has none there.

    Reading the record itself, rather than comparing log-end offsets, is deliberate: Tansu answers a
    ListOffsets(latest) with the last batch's base offset + 1, below the true end of the log.

    The partitions are assigned once and each is paused once it is answered. Re-assigning them on every
    round made aiokafka's fetcher cancel its in-flight fetch and wait for it; a `stop()` landing in that
    wait had its cancellation swallowed (the fetch task catches CancelledError), and the close then hung
    until the caller's timeout (seen: 12 s, failing the broker watch's whole check).
    """
    found: dict[TopicPartition, bytes | None] = dict.fromkeys(positions)
    if not positions:
        return found
    pending = set(positions)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="none", enable_auto_commit=False,
        request_timeout_ms=REQUEST_TIMEOUT_MS, max_partition_fetch_bytes=65536,
    )
    await consumer.start()
    try:
        consumer.assign(sorted(positions))
        for tp, offset in positions.items():
            consumer.seek(tp, offset)
        deadline = asyncio.get_running_loop().time() + wait_seconds
        while pending and (left := deadline - asyncio.get_running_loop().time()) > 0.01:
            try:
                batch = await consumer.getmany(*pending, timeout_ms=int(min(left, 0.5) * 1000))
            except OffsetOutOfRangeError as exc:  # the log ends before that offset: nothing there
                beyond = set(exc.args[0]) if exc.args and isinstance(exc.args[0], dict) else set()
                consumer.pause(*beyond)
                pending -= beyond
                continue
            for tp, records in batch.items():
                at = [r for r in records if r.offset == positions[tp]]
                found[tp] = at[0].value if at else None
                consumer.pause(tp)
                pending.discard(tp)
    finally:
        await consumer.stop()
    return found


async def committed_offsets(
    bootstrap: str, group: str, partitions: list[TopicPartition]
) -> dict[TopicPartition, int | None]:
    """The offsets `group` has committed (None where it has none), without joining the group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, request_timeout_ms=REQUEST_TIMEOUT_MS
    )
    await consumer.start()
    try:
        # One OffsetFetch for them all (`committed()` asks once per partition); -1 means none.
        found = await consumer._coordinator.fetch_committed_offsets(partitions)  # noqa: SLF001
        return {tp: (found[tp].offset if tp in found and found[tp].offset >= 0 else None) for tp in partitions}
    finally:
        await consumer.stop()


class CreateTopicsFirst:
    """A producer client's `send`, changed so that no produce goes out on a connection before our topics were
    created (or found to exist) on it.

    aiokafka reconnects by itself and keeps its metadata, so after a broker restart its next produce reaches a
    broker that has no such topic. Tansu 0.6.0 stores the records anyway, and when the topic is then created (a
    service's CreateTopics, or any client's metadata request) it sets the partition's offset counter back to 0:
    later records are acknowledged at offsets that already hold others, and a consumer reading on from the first
    of two such batches never sees the second (make test's chaos run lost reports that way). A restarted broker
    is always a new connection, and a connection reaches one broker process, so one CreateTopics per connection,
    answered before the first produce on it, is enough.
    """

    def __init__(self, client: AIOKafkaClient, topics: Iterable[str], partitions: int) -> None:
        self._client = client
        self._send = client.send
        # CreateTopics entries: name, partitions, replication factor, replica assignment, configs
        self._topics: list[tuple[Any, ...]] = [(t, partitions, 1, [], []) for t in topics]
        self._prepared: weakref.WeakSet[AIOKafkaConnection] = weakref.WeakSet()

    @classmethod
    def install(cls, producer: AIOKafkaProducer, topics: Iterable[str], partitions: int) -> CreateTopicsFirst:
        guard = cls(producer.client, topics, partitions)
        producer.client.send = guard
        return guard

    async def __call__(self, node_id: int, request: Any, *, group: ConnectionGroup = ConnectionGroup.DEFAULT) -> Any:
        if not isinstance(request, ProduceRequest):
            return await self._send(node_id, request, group=group)
        conn = await self._client._get_conn(node_id, group=group)  # noqa: SLF001 - the one the produce will use
        if conn is None:
            raise NodeNotReadyError(f"node {node_id} is not ready for a produce request")
        if conn not in self._prepared:
            await self._create_topics(conn)
            self._prepared.add(conn)
        try:
            return await conn.send(request, expect_response=request.required_acks != 0)
        except TimeoutError as exc:  # as the client's own send: renew the connection next time
            conn.close(reason=CloseReason.CONNECTION_TIMEOUT)
            raise RequestTimedOutError() from exc

    async def _create_topics(self, conn: AIOKafkaConnection) -> None:
        response = await conn.send(CreateTopicsRequest(self._topics, REQUEST_TIMEOUT_MS, False))
        codes = {entry[0]: entry[1] for entry in response.topic_errors}
        if created := sum(1 for code in codes.values() if code == 0):
            log.info("kafka.topics_created", topics=created)
        # A Kafka cluster answers a broker that is not its controller, or a producer without the right to create
        # topics, with an error; its topics were made when the producer started (`ensure_topics`), and it has no
        # such quirk to guard against: carry on.
        if refused := {t: code for t, code in codes.items() if code not in (0, TopicAlreadyExistsError.errno)}:
            log.warning("kafka.create_topics_refused", error_codes=sorted(set(refused.values())), topics=len(refused))


class Publisher:
    """A plain producer (no idempotence: the embedded broker has no InitProducerId) started lazily.

    Any failure closes it; the next publish starts a fresh one and re-creates missing topics, so a
    broker that restarted empty is healed without restarting the service. A producer that reconnected by
    itself creates them too, before its first produce on the new connection (`CreateTopicsFirst`).
    """

    def __init__(self, bootstrap: str, topic_names: list[str], partitions: int) -> None:
        self._bootstrap = bootstrap
        self._topic_names = topic_names
        self._partitions = partitions
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                await ensure_topics(self._bootstrap, self._topic_names, self._partitions)
                producer = AIOKafkaProducer(
                    bootstrap_servers=self._bootstrap,
                    acks="all",
                    linger_ms=2,
                    max_batch_size=262144,
                    request_timeout_ms=REQUEST_TIMEOUT_MS,
                    enable_idempotence=False,
                )
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                CreateTopicsFirst.install(producer, self._topic_names, self._partitions)
                self._producer = producer
            return self._producer

    async def send_batch(
        self, records: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]]
    ) -> list[RecordMetadata]:
        """Send (topic, key, value, headers) records; returns their metadata in order, or raises."""
        producer = await self._started()
        try:
            futures = [
                await producer.send(topic, value=value, key=key, headers=headers)
                for topic, key, value, headers in records
            ]
            # A broker that died under a connected producer can leave batches waiting: bound the wait.
            return list(await asyncio.wait_for(asyncio.gather(*futures), timeout=REQUEST_TIMEOUT_MS / 1000 + 2))
        except (TimeoutError, KafkaError, OSError):
            await self.reset()
            raise
        except asyncio.CancelledError:
            if not cancelled_from_inside():
                raise
            await self.reset()
            raise ConnectionError("the Kafka client gave up the send (its connection went away)") from None

    async def reset(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), timeout=5)
            except Exception:  # noqa: BLE001 - closing a broken producer must not hide the first error
                log.warning("kafka.producer_close_failed")

    async def close(self) -> None:
        await self.reset()
