"""Backbone throughput: outbox -> broker -> consumer inbox -> effect, beside bare aiokafka (the ceiling)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.proc import load_average, tree_cpu
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


async def steady_hop(
    admin_dsn: str, bootstrap: str, rate: float, seconds: float, cpu: Callable[[], dict[str, float]] | None = None
) -> tuple[float, float, int, dict[str, float]]:
    """One event committed to the outbox every 1/rate s, one at a time (as reports arrive): the latency from
    commit to effect committed, p50 and p99 in ms, how many events were measured, and the CPU seconds `cpu`
    counted (per process) over the steady window alone."""
    cpu = cpu or (lambda: {"bench (python)": time.process_time()})
    name = "b" + uuid.uuid4().hex[:8]
    sent: dict[str, float] = {}
    took: list[float] = []

    async def effect(event: CloudEvent, conn: Connection) -> None:
        await conn.execute("INSERT INTO effects (event_id) VALUES ($1)", event.id)
        took.append(time.perf_counter() - sent[event.id])  # the effect commits with the batch, just after

    settings = ServiceSettings(service_name="bench", db_schema=f"{name}_bench", database_url=admin_dsn,
                               kafka_bootstrap_servers=bootstrap, topic_prefix=f"{name}.")
    runtime = Runtime(ServiceSpec(settings, [EFFECTS], handlers={"incidents.reported": effect}))
    await runtime.start()
    try:
        while runtime.consumer is None or runtime.consumer.assigned_partitions == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # the consumer joins its group before the clock starts
        events = _events(int(rate * seconds))
        before = cpu()
        start = time.perf_counter()
        for i, event in enumerate(events):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            async with runtime.pool.acquire() as conn, conn.transaction():
                await enqueue(conn, [event])
                sent[event.id] = time.perf_counter()
        deadline = time.perf_counter() + 30
        while len(took) < len(events) and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        after = cpu()
    finally:
        await runtime.stop()
    took.sort()
    used = {k: after[k] - before[k] for k in after}
    return took[len(took) // 2] * 1000, took[int(len(took) * 0.99)] * 1000, len(took), used


async def _measured(n: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "_lib"))
    from support.stack import start_embedded  # noqa: PLC0415 - the tests' servers, only when run alone

    stack = start_embedded()
    pids = {"broker": stack._broker.pid, "postgres": stack._pg.pid}  # noqa: SLF001
    try:
        # BENCH_CEILING=0 leaves the bare run out (for a profile of the plumbing alone).
        ceiling = await bare_kafka(stack.bootstrap, n) if os.environ.get("BENCH_CEILING", "1") != "0" else 0.0
        print(f"bare aiokafka produce -> consume: {ceiling:,.0f} events/s")
        if n:
            before = {k: tree_cpu(p) for k, p in pids.items()} | {"bench (python)": time.process_time()}
            rate = await outbox_to_effect(stack.admin_dsn, stack.bootstrap, n)
            after = {k: tree_cpu(p) for k, p in pids.items()} | {"bench (python)": time.process_time()}
            print(f"outbox -> relay -> broker -> inbox -> effect: {rate:,.0f} events/s "
                  f"({rate / (ceiling or rate):.0%})")
            for k in after:  # includes the 3 s join wait and shutdown: an upper bound per event
                print(f"  CPU {k}: {(after[k] - before[k]) * 1e6 / n:.0f} us/event")
        steady_rate = float(os.environ.get("BENCH_STEADY_RATE", "100"))
        seconds = float(os.environ.get("BENCH_STEADY_SECONDS", "10"))
        p50, p99, got, used = await steady_hop(
            stack.admin_dsn, stack.bootstrap, steady_rate, seconds,
            lambda: {k: tree_cpu(p) for k, p in pids.items()} | {"bench (python)": time.process_time()},
        )
        print(f"one hop at {steady_rate:.0f} events/s for {seconds:.0f} s: {got} events, "
              f"p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        for k, seconds_used in used.items():  # the steady window alone
            print(f"  CPU {k}: {seconds_used * 1e6 / got:.0f} us/event")
    finally:
        stack.stop()
    print(f"load average: {load_average()}")


if __name__ == "__main__":
    asyncio.run(_measured(int(os.environ.get("BENCH_EVENTS", "20000"))))
