"""Kafka plumbing: a producer that survives broker restarts, and topic creation."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient, ConnectionGroup, CoordinationType
from aiokafka.cluster import ClusterMetadata
from aiokafka.conn import AIOKafkaConnection, CloseReason
from aiokafka.errors import (
    KafkaError,
    NodeNotReadyError,
    NoError,
    OffsetOutOfRangeError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    for_code,
)
from aiokafka.protocol.admin import CreateTopicsRequest
from aiokafka.protocol.commit import OffsetFetchRequest
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.memory_records import MemoryRecords
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


class BrokerQuestions:
    """Questions to the broker about what it holds: which partitions topics have, which record is at an offset, what
    a consumer group has committed. One client answers them all and is kept between calls (the broker watch asks
    every few seconds): an admin client and a consumer per question, made and closed each time, cost 40-50 ms of
    wall time a check at 500 reports/s into triage, and their set-up ran on the service's event loop.

    The requests are aiokafka's own, sent on one `AIOKafkaClient`, which negotiates their versions with the broker.
    Any failure closes the client, and the next question starts a fresh one: after a broker restart, a new
    connection and new metadata.
    """

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._client: AIOKafkaClient | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> BrokerQuestions:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    @contextlib.asynccontextmanager
    async def _asking(self) -> AsyncIterator[AIOKafkaClient]:
        async with self._lock:
            if self._client is None:
                client = AIOKafkaClient(bootstrap_servers=self._bootstrap, request_timeout_ms=REQUEST_TIMEOUT_MS)
                try:
                    await client.bootstrap()
                except BaseException:
                    await client.close()
                    raise
                self._client = client
            client = self._client
        try:
            yield client
        except BaseException:
            if self._client is client:
                self._client = None
                await client.close()
            raise

    async def metadata(self) -> ClusterMetadata:
        """The broker's metadata for every topic (a request naming a missing topic may create it)."""
        async with self._asking() as client:
            return await client.fetch_all_metadata()

    async def partitions(self, topics: Iterable[str]) -> dict[str, list[int]]:
        """The partitions of each of `topics` the broker has; a topic it lacks is absent from the answer."""
        return partitions_in(await self.metadata(), topics)

    async def records_at(
        self, positions: Mapping[TopicPartition, int], wait_seconds: float = 3.0, *,
        cluster: ClusterMetadata | None = None,
    ) -> dict[TopicPartition, bytes | None]:
        """The value of the record at each (partition, offset), or None where the broker has none there.

        Reading the record itself, rather than comparing log-end offsets, is deliberate: Tansu answers a
        ListOffsets(latest) with the last batch's base offset + 1, below the true end of the log. A partition
        answered with no records is asked again (each fetch waits up to half a second for one) until
        `wait_seconds` have passed. Each partition is asked of its leader in `cluster` (the metadata the caller
        just read), or in metadata read now."""
        found: dict[TopicPartition, bytes | None] = dict.fromkeys(positions)
        pending = dict(positions)
        if not pending:
            return found
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        async with self._asking() as client:
            if cluster is None:
                cluster = await client.fetch_all_metadata()
            while pending:
                leaders = {tp: cluster.leader_for_partition(tp) for tp in pending}
                # A partition the broker lacks (None), or one without a leader (-1), holds nothing. Node 0 is a node.
                pending = {tp: offset for tp, offset in pending.items() if _is_node(leaders[tp])}
                if not pending:
                    break
                by_leader: dict[int, dict[str, list[tuple[int, int, int]]]] = {}
                for tp, offset in pending.items():
                    by_leader.setdefault(leaders[tp], {}).setdefault(tp.topic, []).append(
                        (tp.partition, offset, _FETCH_PARTITION_BYTES)
                    )
                wait_ms = int(max(0.0, min(deadline - loop.time(), 0.5)) * 1000)
                responses = await asyncio.gather(*(
                    client.send(node, FetchRequest(wait_ms, 1, _FETCH_PARTITION_BYTES * 4, 0, list(topics.items())))
                    for node, topics in by_leader.items()
                ))
                for response in responses:
                    for topic, answers in response.topics:
                        for partition, error_code, _highwater, *part_data in answers:
                            tp = TopicPartition(topic, partition)
                            if tp not in pending:
                                continue
                            error = for_code(error_code)
                            if error is OffsetOutOfRangeError:  # the log ends before that offset
                                del pending[tp]
                            elif error is not NoError:
                                raise error()
                            elif (held := _records(part_data[-1])) is not None:
                                found[tp] = held.get(pending.pop(tp))
                if loop.time() >= deadline:
                    break
        return found

    async def committed_offsets(
        self, group: str, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        """The offsets `group` has committed (None where it has none), without joining the group: one OffsetFetch
        to its coordinator for them all."""
        by_topic: dict[str, list[int]] = {}
        for tp in partitions:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        async with self._asking() as client:
            coordinator = await client.coordinator_lookup(CoordinationType.GROUP, group)
            response = await client.send(
                coordinator, OffsetFetchRequest(group, list(by_topic.items())), group=ConnectionGroup.COORDINATION
            )
        if error_code := getattr(response, "error_code", 0):
            raise for_code(error_code)()
        found: dict[TopicPartition, int | None] = dict.fromkeys(partitions)
        for topic, answers in response.topics:
            for partition, offset, _metadata, error_code in answers:
                error = for_code(error_code)
                if error is NoError:
                    found[TopicPartition(topic, partition)] = offset if offset >= 0 else None  # -1: none
                elif error is not UnknownTopicOrPartitionError:
                    raise error()
        return found


_FETCH_PARTITION_BYTES = 1 << 20


def partitions_in(cluster: ClusterMetadata, topics: Iterable[str]) -> dict[str, list[int]]:
    """The partitions of each of `topics` in the broker's metadata; a topic it lacks is absent from the answer."""
    present = cluster.topics()
    return {t: sorted(cluster.partitions_for_topic(t) or ()) for t in set(topics) if t in present}


def _is_node(leader: int | None) -> bool:
    return leader is not None and leader >= 0


def _records(data: bytes | None) -> dict[int, bytes | None] | None:
    """The records of a fetched partition by offset; None if it held none (yet)."""
    if not data:
        return None
    records = MemoryRecords(data)
    held: dict[int, bytes | None] = {}
    while records.has_next():
        batch = records.next_batch()
        if batch is None:
            break
        for record in batch:
            held[record.offset] = record.value
    return held or None


async def topic_partitions(bootstrap: str, topics: Iterable[str]) -> dict[str, list[int]]:
    """`BrokerQuestions.partitions`, on a client of its own."""
    async with BrokerQuestions(bootstrap) as broker:
        return await broker.partitions(topics)


async def records_at(
    bootstrap: str, positions: Mapping[TopicPartition, int], wait_seconds: float = 3.0
) -> dict[TopicPartition, bytes | None]:
    """`BrokerQuestions.records_at`, on a client of its own."""
    async with BrokerQuestions(bootstrap) as broker:
        return await broker.records_at(positions, wait_seconds)


async def committed_offsets(
    bootstrap: str, group: str, partitions: list[TopicPartition]
) -> dict[TopicPartition, int | None]:
    """`BrokerQuestions.committed_offsets`, on a client of its own."""
    async with BrokerQuestions(bootstrap) as broker:
        return await broker.committed_offsets(group, partitions)


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
