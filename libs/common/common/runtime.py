"""What every service runs: its database pool, outbox relay, consumers and background loops.

A service describes itself (`ServiceSpec`); `Runtime` starts the parts in order and stops them in
reverse: on shutdown each consumer finishes and commits the batch it holds, then the relay stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg
import structlog
from fastapi import FastAPI

from common.broker_watch import BrokerWatch
from common.consumer import ConsumerRunner, Handler, RawHandler
from common.db import Migration, open_database
from common.health import Check, broker_check, database_check
from common.kafka import Publisher
from common.outbox import OutboxRelay
from common.settings import ServiceSettings
from common.topics import TopicNames, consumers_of

log = structlog.get_logger(__name__)

BackgroundLoop = Callable[["Runtime", asyncio.Event], Awaitable[None]]


@dataclass
class ServiceSpec:
    settings: ServiceSettings
    migrations: list[Migration]
    handlers: Mapping[str, Handler] = field(default_factory=dict)
    raw_handlers: Mapping[str, RawHandler] = field(default_factory=dict)
    background: list[BackgroundLoop] = field(default_factory=list)
    # Which services consume a topic: the product's topology, replaceable for tests' sample services.
    consumers_of: Callable[[str], Iterable[str]] = consumers_of


class Runtime:
    def __init__(self, spec: ServiceSpec) -> None:
        self.spec = spec
        self.settings = spec.settings
        self.topics = TopicNames(spec.settings.topic_prefix)
        self.stop_event = asyncio.Event()
        self._pool: asyncpg.Pool | None = None
        self.publisher = Publisher(
            spec.settings.kafka_bootstrap_servers, self.topics.all(), spec.settings.topic_partitions
        )
        self.relay: OutboxRelay | None = None
        self.broker_watch: BrokerWatch | None = None
        self.consumer: ConsumerRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "runtime not started"
        return self._pool

    async def start(self) -> None:
        s = self.settings
        self._pool = await _retrying(
            "database", lambda: open_database(s, self.spec.migrations, max_size=s.db_pool_max)
        )
        self.relay = OutboxRelay(
            self.pool, self.publisher, self.topics, schema=s.schema_name,
            poll_seconds=s.outbox_poll_seconds, linger_ms=s.outbox_linger_ms,
        )
        self._spawn(self.relay.run(self.stop_event))
        self.broker_watch = BrokerWatch(
            lambda: self.pool, s.kafka_bootstrap_servers, self.topics, schema=s.schema_name,
            consumer_groups=self.spec.consumers_of, interval_seconds=s.outbox_watch_seconds,
            retention=timedelta(days=s.outbox_retention_days),
        )
        self._spawn(self.broker_watch.run(self.stop_event))
        if self.spec.handlers or self.spec.raw_handlers:
            self.consumer = ConsumerRunner(
                pool=self.pool, bootstrap=s.kafka_bootstrap_servers, topic_names=self.topics,
                group=f"{s.topic_prefix}{s.service_name}", handlers=self.spec.handlers,
                raw_handlers=self.spec.raw_handlers,
                partitions=s.topic_partitions, fetch_wait_ms=s.consumer_fetch_wait_ms, gather_ms=s.consumer_gather_ms,
            )
            self._spawn(self.consumer.run(self.stop_event))
        for loop in self.spec.background:
            self._spawn(loop(self, self.stop_event))
        log.info("service.started", schema=s.schema_name)

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await coro
            except Exception:
                log.exception("service.task_crashed")
                raise

        self._tasks.append(asyncio.create_task(guarded()))

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.publisher.close()
        if self._pool is not None:
            await self._pool.close()
        log.info("service.stopped")

    def checks(self) -> Mapping[str, Check]:
        return {
            "database": database_check(self.pool),
            "broker": broker_check(self.settings.kafka_bootstrap_servers),
        }

    def metrics(self) -> dict[str, float]:
        return {
            "outbox_published_total": self.relay.published_total if self.relay else 0,
            "consumer_processed_total": self.consumer.processed_total if self.consumer else 0,
            "consumer_dead_lettered_total": self.consumer.dead_lettered_total if self.consumer else 0,
            "consumer_lag": self.consumer.lag if self.consumer else 0,
            "consumer_assigned_partitions": self.consumer.assigned_partitions if self.consumer else 0,
            "consumer_rewound_partitions_total": self.consumer.rewinder.rewound_total if self.consumer else 0,
            "outbox_redriven_total": self.broker_watch.redriven_total if self.broker_watch else 0,
            "broker_losses_detected_total": self.broker_watch.losses_total if self.broker_watch else 0,
            "broker_watch_checks_total": self.broker_watch.checks_total if self.broker_watch else 0,
            "broker_watch_failures_total": self.broker_watch.check_failures_total if self.broker_watch else 0,
            "broker_watch_lock_held_seconds_total": (
                self.broker_watch.lock_held_seconds_total if self.broker_watch else 0.0
            ),
        }

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = self
        await self.start()
        try:
            yield
        finally:
            await self.stop()


async def _retrying(what: str, attempt: Callable[[], Awaitable[asyncpg.Pool]]) -> asyncpg.Pool:
    """At start-up a dependency may still be starting (or restarting): wait for it, with backoff."""
    delay = 0.25
    for _ in range(40):
        try:
            return await attempt()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("service.dependency_unavailable", dependency=what, error=str(exc), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)
    return await attempt()
