"""The consumer runner: "on topic T, call handler(event, conn)", with exactly-once effects.

Each poll's batch (all its partitions) is handled in one PostgreSQL transaction that also records the
event ids in the inbox, so a redelivered event has no second effect. Offsets are committed only after
that transaction, batch by batch (never deferred: see `_consume`).
If a handler fails, the batch is rolled back and re-run one event at a time to find the poison
message, which goes to `<topic>.dlq` (through the outbox, so that too is exactly-once) with its
error; the runner carries on. Database or broker outages are waited out, never dead-lettered.
A `BatchedHandler` (or `BatchedRawHandler`) gets a batch's fresh events (deliveries) of its topics in one call, in
the same transaction, each partition's in order, after the batch's per-event handlers: it can write them all with
one statement where a per-event handler takes one each.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from common.aio import cancelled_from_inside, sleep_unless_stopped
from common.db import TRANSIENT_ERRORS, Connection
from common.events import CloudEvent, MalformedEvent, describe_problems, parse_event
from common.incident import sensitive_values
from common.kafka import ensure_topics
from common.logging import event_context, events_context, scrubbed
from common.outbox import enqueue_raw
from common.rewind import Rewinder
from common.topics import DLQ_SUFFIX, TopicNames, dead_letter_topic

log = structlog.get_logger(__name__)

Handler = Callable[[CloudEvent, Connection], Awaitable[None]]
EventBatchHandler = Callable[[Sequence[CloudEvent], Connection], Awaitable[None]]
# A raw handler sees every record as it came, malformed or not (the audit log keeps dead letters too).
RawHandler = Callable[["Delivery", Connection], Awaitable[None]]
RawBatchHandler = Callable[[Sequence["Delivery"], Connection], Awaitable[None]]


@dataclass(frozen=True)
class Delivery:
    """One Kafka record as the runner sees it: parsed, or with the reason it could not be."""

    record: ConsumerRecord[bytes, bytes]
    topic: str
    event: CloudEvent | None
    error: str | None

    @cached_property
    def event_id(self) -> str:
        """The id repeats are recognised by. A dead letter carries its original's value, so on a
        dead-letter topic the id is qualified by the topic, and by the consumer that dead-lettered it: the
        copy is a fact of its own, and each service that could not handle an event says so separately."""
        base = self.event.id if self.event is not None else (
            "malformed:" + hashlib.sha256(self.record.value or b"").hexdigest()
        )
        if not self.topic.endswith(DLQ_SUFFIX):
            return base
        consumer = next((v for k, v in self.record.headers or () if k == "dlq.consumer"), None)
        return f"{self.topic}:{consumer.decode(errors='replace')}:{base}" if consumer else f"{self.topic}:{base}"


@dataclass(frozen=True)
class BatchedRawHandler:
    """A raw handler that takes all the fresh deliveries of a batch at once (those of one poll, of any of its
    partitions, each partition's in order), inside the batch's transaction (so it can write them with one
    statement); alone, it is called with one delivery."""

    handle_batch: RawBatchHandler

    async def __call__(self, d: Delivery, conn: Connection) -> None:
        await self.handle_batch([d], conn)


@dataclass(frozen=True)
class BatchedHandler:
    """A handler that takes the fresh events of a batch for its topics at once (those of one poll, each
    partition's in order), inside the batch's transaction and after its per-event handlers, so it must not depend
    on where its events stood among other topics' events. A malformed record fails the batch, which the runner
    then re-runs an event at a time: alone, it is called with one event. Usable wherever a `Handler` is."""

    handle_batch: EventBatchHandler

    async def __call__(self, event: CloudEvent, conn: Connection) -> None:
        await self.handle_batch([event], conn)


class ConsumerRunner:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        bootstrap: str,
        topic_names: TopicNames,
        group: str,
        handlers: Mapping[str, Handler],
        raw_handlers: Mapping[str, RawHandler] | None = None,
        partitions: int = 3,
        max_batch: int = 500,
        fetch_wait_ms: int = 50,
        gather_ms: int = 0,
    ) -> None:
        self._pool = pool
        self._bootstrap = bootstrap
        self._topics = topic_names
        self._group = group
        self._handlers = dict(handlers)
        self._raw_handlers = dict(raw_handlers or {})
        self._partitions = partitions
        self._max_batch = max_batch
        self._fetch_wait_ms = fetch_wait_ms
        self._gather_seconds = gather_ms / 1000
        self._closing: set[asyncio.Task[None]] = set()
        self.processed_total = 0
        self.dead_lettered_total = 0
        self.lag = 0
        self.assigned_partitions = 0
        self.rewinder = Rewinder(bootstrap, group)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; a broker outage restarts the Kafka consumer with backoff."""
        try:
            await self._run(stop)
        finally:
            await self.rewinder.stop()

    async def _run(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            consumer: AIOKafkaConsumer | None = None
            try:
                consumer = await self._start_unless_stopped(stop)
                if consumer is None:
                    return
                backoff = 0.5
                await self._consume(consumer, stop)
            except (KafkaError, OSError, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError) and not cancelled_from_inside():
                    raise
                log.warning("consumer.broker_unavailable", group=self._group, error=str(exc), retry_in=backoff)
                await sleep_unless_stopped(stop, backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if consumer is not None:
                    await consumer.stop()

    async def _start_unless_stopped(self, stop: asyncio.Event) -> AIOKafkaConsumer | None:
        """Start the Kafka consumer, or give up as soon as `stop` is set: joining the group can take seconds,
        and a service being stopped (or a test) should not wait for it."""
        starting = asyncio.ensure_future(self._start_consumer())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if starting.done():
            return starting.result()
        starting.cancel()  # _start_consumer closes the half-started consumer on its way out
        await asyncio.gather(starting, return_exceptions=True)
        return None

    async def _start_consumer(self) -> AIOKafkaConsumer:
        physical = [self._topics.physical(t) for t in [*self._handlers, *self._raw_handlers]]
        await ensure_topics(self._bootstrap, physical, self._partitions)
        consumer = AIOKafkaConsumer(
            *physical,
            bootstrap_servers=self._bootstrap,
            group_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a group whose offsets vanished re-reads; the inbox absorbs repeats
            max_poll_records=self._max_batch,
            metadata_max_age_ms=5000,
            # Tansu answers a fetch only when its wait is over, not when a record arrives: with aiokafka's
            # default of 500 ms every hop of the pipeline waited that long (bench/RESULTS.md, triage).
            fetch_max_wait_ms=self._fetch_wait_ms,
        )
        try:
            await consumer.start()
        except asyncio.CancelledError:
            # Stopped while joining the group: closing now would wait for the join to finish (Tansu holds a
            # JoinGroup about 5 s), so the close finishes in the background while the service stops.
            closing = asyncio.create_task(consumer.stop())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
            raise
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    async def _consume(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        done: dict[TopicPartition, int] = {}  # per partition, the offset after the last batch handled
        try:
            while not stop.is_set():
                polled_at = asyncio.get_running_loop().time()
                batch = await consumer.getmany(timeout_ms=200, max_records=self._max_batch)
                if batch:
                    await self._handle(batch, stop)
                    handled = {tp: rs[-1].offset + 1 for tp, rs in batch.items()}
                    done.update(handled)
                    # At once, not deferred: offsets held back across a broker restart were committed to the new,
                    # empty log above the events re-driven onto it, and those were skipped (make test's chaos run).
                    await self._commit(consumer, handled)
                    self.rewinder.handled(batch)
                    await self._gather(stop, polled_at, sum(len(rs) for rs in batch.values()))
                for tp in await self.rewinder.after_poll(consumer):
                    done.pop(tp, None)
                self._measure(consumer, done)
        finally:
            self.assigned_partitions = 0  # not consuming: /metrics shows it rather than a lag of 0

    async def _gather(self, stop: asyncio.Event, polled_at: float, handled: int) -> None:
        """Off the path to a person being told, wait so that the next poll comes `gather_ms` after this one: what
        arrives meanwhile is handled in one batch. A full batch means more is waiting: no wait then."""
        if self._gather_seconds <= 0 or handled >= self._max_batch:
            return
        left = polled_at + self._gather_seconds - asyncio.get_running_loop().time()
        if left > 0:
            await sleep_unless_stopped(stop, left)

    @staticmethod
    async def _commit(consumer: AIOKafkaConsumer, handled: dict[TopicPartition, int]) -> None:
        """Commit what was handled on the partitions still assigned. A partition taken away by a rebalance
        meanwhile is re-read from its last commit by its new owner, and the inbox absorbs the repeats."""
        assigned = consumer.assignment()
        offsets = {tp: offset for tp, offset in handled.items() if tp in assigned}
        if offsets:
            await consumer.commit(offsets)

    def _measure(self, consumer: AIOKafkaConsumer, done: dict[TopicPartition, int]) -> None:
        """Lag over every assigned partition (records the broker holds beyond what was handled)."""
        assigned = consumer.assignment()
        self.assigned_partitions = len(assigned)
        self.lag = sum(
            max(0, (consumer.highwater(tp) or 0) - done.get(tp, consumer.highwater(tp) or 0)) for tp in assigned
        )

    async def _handle(
        self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]], stop: asyncio.Event
    ) -> None:
        # Every partition of the poll in one transaction (each partition's records in order): a transaction
        # per partition cost a BEGIN, an inbox INSERT and a COMMIT each, for a record or two at a time at
        # everyday rates.
        await self._handle_until_done([self._parse(r) for records in batch.values() for r in records], stop)

    def _parse(self, record: ConsumerRecord[bytes, bytes]) -> Delivery:
        topic = self._topics.logical(record.topic)
        try:
            return Delivery(record, topic, parse_event(record.value), None)
        except MalformedEvent as exc:
            return Delivery(record, topic, None, str(exc))

    async def _handle_until_done(self, deliveries: list[Delivery], stop: asyncio.Event) -> None:
        """Handle a batch; transient failures are retried (the batch is not committed meanwhile)."""
        backoff = 0.2
        while True:
            try:
                await self._handle_batch(deliveries)
                return
            except TRANSIENT_ERRORS as exc:
                log.warning("consumer.transient_failure", group=self._group, error=repr(exc), retry_in=backoff)
                await asyncio.sleep(backoff)  # not interruptible: a batch is finished before shutdown
                backoff = min(backoff * 2, 5.0)

    async def _handle_batch(self, deliveries: list[Delivery]) -> None:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                fresh = await self._claim(conn, deliveries)
                claimed = len(fresh)
                batched: dict[int, tuple[BatchedRawHandler | BatchedHandler, list[Delivery]]] = {}
                for d in deliveries:
                    if d.event_id in fresh:
                        fresh.discard(d.event_id)  # a repeat within the same batch is not fresh
                        handler = self._raw_handlers.get(d.topic) or self._handlers.get(d.topic)
                        if isinstance(handler, BatchedRawHandler | BatchedHandler):
                            batched.setdefault(id(handler), (handler, []))[1].append(d)
                        else:
                            await self._dispatch(d, conn)
                for batch_handler, ds in batched.values():
                    await self._dispatch_batch(batch_handler, ds, conn)
            self.processed_total += claimed
        except TRANSIENT_ERRORS:
            raise
        except Exception:  # noqa: BLE001 - one bad event must not stop the others: isolate it
            # Alone in its batch too: raising it here ended the consumer's task (nothing more was consumed).
            for d in deliveries:
                await self._handle_one(d)

    async def _handle_one(self, d: Delivery) -> None:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if d.event_id not in await self._claim(conn, [d]):
                    return
                await self._dispatch(d, conn)
            self.processed_total += 1
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - poison: dead-letter it and carry on
            await self._dead_letter(d, exc)

    async def _claim(self, conn: Connection, deliveries: list[Delivery]) -> set[str]:
        rows = await conn.fetch(
            "INSERT INTO inbox (consumer, event_id, topic) "
            "SELECT $1, e, t FROM unnest($2::text[], $3::text[]) AS u(e, t) "
            "ON CONFLICT DO NOTHING RETURNING event_id",
            self._group,
            [d.event_id for d in deliveries],
            [d.topic for d in deliveries],
        )
        return {r["event_id"] for r in rows}

    async def _dispatch(self, d: Delivery, conn: Connection) -> None:
        raw = self._raw_handlers.get(d.topic)
        if raw is not None:
            await raw(d, conn)
            return
        event = _event_of(d)
        with event_context(event):
            await self._handlers[d.topic](event, conn)

    @staticmethod
    async def _dispatch_batch(
        handler: BatchedRawHandler | BatchedHandler, deliveries: list[Delivery], conn: Connection
    ) -> None:
        if isinstance(handler, BatchedRawHandler):
            await handler.handle_batch(deliveries, conn)
            return
        events = [_event_of(d) for d in deliveries]
        with events_context(events):
            await handler.handle_batch(events, conn)

    async def _dead_letter(self, d: Delivery, exc: Exception) -> None:
        error = _error_text(d, exc)
        log.error("consumer.dead_lettered", group=self._group, topic=d.topic, event_id=d.event_id, error=error)
        headers = [
            ("dlq.error", error.encode()),
            ("dlq.topic", d.topic.encode()),
            ("dlq.partition", str(d.record.partition).encode()),
            ("dlq.offset", str(d.record.offset).encode()),
            ("dlq.consumer", self._group.encode()),
        ]
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO inbox (consumer, event_id, topic, outcome) VALUES ($1, $2, $3, 'dead-lettered') "
                "ON CONFLICT (consumer, event_id) DO UPDATE SET outcome = 'dead-lettered'",
                self._group, d.event_id, d.topic,
            )
            dlq_id = f"dlq:{self._group}:{d.event_id}"
            await enqueue_raw(
                conn, [(dlq_id, dead_letter_topic(d.topic), d.record.key, d.record.value or b"", headers)]
            )
        self.dead_lettered_total += 1


def _error_text(d: Delivery, exc: Exception) -> str:
    """What went wrong, for the log line and the dead letter's header (which audit keeps for ever): a validation
    error as where and what (pydantic's own text quotes the input, such as a subject's name and date of birth),
    anything else with the event's sensitive values scrubbed."""
    text = describe_problems(exc, root="(data)") if isinstance(exc, ValidationError) else str(exc)
    if d.event is not None:
        text = scrubbed(text, sensitive_values(d.event.data))
    return f"{type(exc).__name__}: {text}"[:2000]


def _event_of(d: Delivery) -> CloudEvent:
    """The delivery's parsed event; a malformed record fails its handling (and is dead-lettered when alone)."""
    if d.event is None:
        raise MalformedEvent(d.error or "malformed")
    return d.event


__all__ = [
    "BatchedHandler", "BatchedRawHandler", "ConsumerRunner", "Delivery", "EventBatchHandler", "Handler",
    "RawBatchHandler", "RawHandler",
]
