"""Audit log speed: chain verification beside bare SHA-256 (the ceiling), Merkle proof generation at a million
records, and (when the audit store is there) events appended/s from Kafka into the chain."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaProducer

from audit.chain import AuditRecord, ChainHead, next_record, record_event, verify_chain
from audit.merkle import MerkleTree, verify_consistency, verify_inclusion
from bench.proc import load_average, tree_cpu
from common.events import CloudEvent, new_event
from common.topics import EventType, Topic

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
SCHOOL = "school-urn-100001"


def build_chain(n: int, school: str = SCHOOL) -> list[AuditRecord]:
    """A chain of n records whose events are real CloudEvents (50 distinct ones, reused under new ids)."""
    head = ChainHead.genesis(school)
    base: list[AuditRecord] = []
    def at(minutes: int) -> Callable[[], datetime]:
        return lambda: T0 + timedelta(minutes=minutes)

    for i in range(50):
        event = new_event(
            EventType.INCIDENT_REPORTED, source="intake", subject=f"inc-{i // 3}", schoolid=school,
            data={"class": "inappropriate", "where": "ICT suite — PC 12", "n": i},
            clock=at(i), event_id=f"evt-{i:07d}",
        )
        base.append(record_event(ChainHead.genesis(school), event, recorded_at=T0))
    records: list[AuditRecord] = []
    for i in range(n):
        src = base[i % 50]
        r = next_record(head, event_id=f"evt-{i:07d}", topic=src.topic, event=src.event,
                        recorded_at=T0 + timedelta(seconds=i))
        records.append(r)
        head = r.head
    return records


def _best_of(runs: int, fn: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


@dataclass(frozen=True)
class ChainSpeed:
    records: int
    mean_bytes: float
    bare_per_s: float
    verify_per_s: float
    tree_build_s: float
    inclusion_ms: float
    consistency_ms: float
    max_inclusion_hashes: int
    max_consistency_hashes: int


def chain_speed(n: int, proofs: int = 1000) -> ChainSpeed:
    """Records/s for verify_chain over n records and for bare SHA-256 over the same bytes, best of 3 each;
    median generation time of `proofs` inclusion and consistency proofs over the n-leaf tree."""
    records = build_chain(n)
    inputs = [r.prev_hash + r.canonical for r in records]
    sha256 = hashlib.sha256

    def bare() -> None:
        for b in inputs:
            sha256(b).digest()

    def verified() -> None:
        if verify_chain(records).intact_up_to != n:
            raise AssertionError("benchmark chain does not verify")

    bare_s = _best_of(3, bare)
    verify_s = _best_of(3, verified)
    mean_bytes = sum(map(len, inputs)) / n
    inputs.clear()  # free ~0.5 GB before the tree is built

    started = time.perf_counter()
    tree = MerkleTree(r.leaf_hash for r in records)
    tree_build_s = time.perf_counter() - started
    root = tree.root()
    rng = random.Random(6962)

    inclusion: list[float] = []
    max_inc = 0
    for index in [rng.randrange(n) for _ in range(proofs)]:
        started = time.perf_counter()
        proof = tree.inclusion_proof(index)
        inclusion.append(time.perf_counter() - started)
        max_inc = max(max_inc, len(proof))
        verify_inclusion(tree.leaf(index), index, n, proof, root)  # outside the clock: a wrong proof is no result

    consistency: list[float] = []
    max_con = 0
    for old in [rng.randrange(1, n + 1) for _ in range(proofs)]:
        started = time.perf_counter()
        proof = tree.consistency_proof(old)
        consistency.append(time.perf_counter() - started)
        max_con = max(max_con, len(proof))
        verify_consistency(old, n, tree.root(old), root, proof)

    return ChainSpeed(
        records=n, mean_bytes=mean_bytes, bare_per_s=n / bare_s, verify_per_s=n / verify_s,
        tree_build_s=tree_build_s, inclusion_ms=statistics.median(inclusion) * 1000,
        consistency_ms=statistics.median(consistency) * 1000, max_inclusion_hashes=max_inc,
        max_consistency_hashes=max_con,
    )


def chain_rows(s: ChainSpeed) -> list[tuple[str, str, str]]:
    n = f"{s.records:,}"
    return [
        ("audit", f"bare SHA-256 over the same bytes, {n} x ~{s.mean_bytes:.0f} B (ceiling)",
         f"{s.bare_per_s:,.0f} records/s"),
        ("audit", f"verify_chain over {n} records", f"{s.verify_per_s:,.0f} records/s"),
        ("audit", "verification / ceiling", f"{s.verify_per_s / s.bare_per_s:.0%}"),
        ("audit", f"Merkle tree build, {n} leaves", f"{s.tree_build_s:.2f} s"),
        ("audit", f"inclusion proof at {n}, median of 1,000 (max {s.max_inclusion_hashes} hashes)",
         f"{s.inclusion_ms:.3f} ms"),
        ("audit", f"consistency proof at {n}, median of 1,000 (max {s.max_consistency_hashes} hashes)",
         f"{s.consistency_ms:.3f} ms"),
    ]


class CpuMeter:
    """CPU seconds (user + system) spent between start() and stop() by this process and by the process trees
    of the given server pids (PostgreSQL's backends are children of its postmaster), read from /proc."""

    def __init__(self, servers: dict[str, int]) -> None:
        self.servers = servers
        self._start: dict[str, float] = {}
        self.spent: dict[str, float] = {}
        self.notes: list[str] = []

    def _now(self) -> dict[str, float]:
        return {"bench (audit) process": time.process_time(), **{k: tree_cpu(p) for k, p in self.servers.items()}}

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> None:
        self.spent = {k: v - self._start[k] for k, v in self._now().items()}


def _bench_events(n: int, schools: int) -> tuple[list[CloudEvent], list[CloudEvent]]:
    """(warm-up: one event per school, the n timed events)."""
    warm_up = [
        new_event(EventType.INCIDENT_REPORTED, source="bench", subject=f"warm-up-{i}", schoolid=f"school-{i}",
                  data={"n": -1}) for i in range(schools)
    ]
    events = [
        new_event(EventType.INCIDENT_REPORTED, source="bench", subject=f"incident-{i}",
                  schoolid=f"school-{i % schools}", data={"n": i, "padding": "x" * 120})
        for i in range(n)
    ]
    return warm_up, events


async def _send_all(producer: AIOKafkaProducer, topic: str, events: list[CloudEvent]) -> None:
    for e in events:
        await producer.send(topic, e.to_bytes(), key=e.schoolid.encode())
    await producer.flush()


async def _producer_process(bootstrap: str, topic: str, n: int, schools: int) -> None:
    """`python -m bench.audit produce ...`: the timed events' producer, in a process of its own (as intake's relay
    is beside the audit service): it sends the warm-up, says "ready", and on a line from stdin sends the rest."""
    warm_up, events = _bench_events(n, schools)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    try:
        await _send_all(producer, topic, warm_up)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        started = time.perf_counter()
        await _send_all(producer, topic, events)
        print(f"sent {time.perf_counter() - started:.3f}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # alive while its CPU is read
    finally:
        await producer.stop()


async def kafka_append(
    admin_dsn: str, bootstrap: str, n: int, schools: int = 10, cpu: CpuMeter | None = None,
    separate_producer: bool = True,
) -> float | None:
    """Events/s from incidents.reported records produced on the broker to records committed in the chain,
    through the audit service's Runtime with its own migrations and raw handlers. None without audit.store.

    The producer runs in a process of its own (`separate_producer`, as in the product, where intake's relay
    publishes), or in this process and event loop, sharing its CPU with the consumer (as until 2026-11-23).
    With `cpu`, the CPU spent inside the clock is measured too."""
    try:
        from audit.config import AuditSettings
        from audit.store import load_records, raw_handlers
        from audit.store import schools as schools_of
    except ImportError:
        return None

    from common.db import load_migrations
    from common.http import tune_gc
    from common.runtime import Runtime, ServiceSpec

    name = "a" + uuid.uuid4().hex[:8]
    settings = AuditSettings(db_schema=f"{name}_audit", database_url=admin_dsn, kafka_bootstrap_servers=bootstrap,
                             topic_prefix=f"{name}.")
    runtime = Runtime(ServiceSpec(settings, load_migrations("audit.migrations"), raw_handlers=raw_handlers()))
    topic = runtime.topics.physical(Topic.INCIDENTS_REPORTED.value)
    await runtime.start()
    # This process stands in for the audit service's, which tunes its collector once started (common.http.serve);
    # undone at the end, for the benchmarks that run after this one in the same process.
    gc_threshold = gc.get_threshold()
    tune_gc(settings.gc_gen0_threshold)

    async def wait_for(count: int, deadline: float) -> None:
        while True:
            async with runtime.pool.acquire() as conn:
                stored = await conn.fetchval("SELECT count(*) FROM audit_records")
            if stored >= count:
                return
            if time.perf_counter() > deadline:
                raise TimeoutError(f"only {stored} of {count} events appended in time")
            await asyncio.sleep(0.05)

    producer: AIOKafkaProducer | None = None
    child: asyncio.subprocess.Process | None = None
    try:
        # The clock starts once the consumer has joined its group and appended one event per school.
        if separate_producer:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.audit", "produce", bootstrap, topic, str(n), str(schools),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).resolve().parents[1],
            )
            assert child.stdin is not None and child.stdout is not None
            if (line := await child.stdout.readline()) != b"ready\n":
                raise RuntimeError(f"the producer process did not start: {line!r}")
            if cpu is not None:
                cpu.servers["producer process"] = child.pid
        else:
            warm_up, events = _bench_events(n, schools)
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
            await producer.start()
            await _send_all(producer, topic, warm_up)
        await wait_for(schools, time.perf_counter() + 60)
        if cpu is not None:
            cpu.start()
        start = time.perf_counter()
        if child is not None:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            await child.stdin.drain()
        else:
            assert producer is not None
            await _send_all(producer, topic, events)
        await wait_for(schools + n, start + 300)
        elapsed = time.perf_counter() - start
        rate = n / elapsed
        if child is not None and cpu is not None:
            assert child.stdout is not None
            sent = (await child.stdout.readline()).split()
            cpu.notes.append(f"the producer had sent all {n:,} after {float(sent[1]):.2f} s of the {elapsed:.2f} s")
        if cpu is not None:
            cpu.stop()
        async with runtime.pool.acquire() as conn:  # outside the clock: a broken chain is no result
            for school in await schools_of(conn):
                if not verify_chain(await load_records(conn, school)).ok:
                    raise AssertionError(f"the chain of {school} does not verify")
        return rate
    finally:
        if child is not None:
            if child.stdin is not None:
                child.stdin.close()
            try:
                await asyncio.wait_for(child.wait(), 30)
            except TimeoutError:
                child.kill()
                await child.wait()
        if producer is not None:
            await producer.stop()
        await runtime.stop()
        gc.set_threshold(*gc_threshold)
        gc.unfreeze()


async def _append_only(n: int, inline: bool) -> None:
    """`python -m bench.audit`: only the Kafka append row, on its own embedded servers (BENCH_EVENTS sizes it;
    BENCH_INLINE_PRODUCER=1 produces from this process, as the bench did before 2026-11-23)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "_lib"))
    from support.stack import start_embedded

    before = load_average()
    stack = start_embedded()
    assert stack._pg is not None and stack._broker is not None
    cpu = CpuMeter({"PostgreSQL": stack._pg.pid, "broker": stack._broker.pid})
    try:
        rate = await kafka_append(stack.admin_dsn, stack.bootstrap, n, cpu=cpu, separate_producer=not inline)
    finally:
        stack.stop()
    after = load_average()
    producer = "producer in the bench process" if inline else "producer in its own process"
    print(f"audit | events appended from Kafka into the chain ({n:,}; {producer}) | {rate:,.0f} events/s"
          f" | load average before: {before}; after: {after}")
    print("CPU per event inside the clock: " + ", ".join(
        f"{k} {v / n * 1e6:.0f} us" for k, v in cpu.spent.items()))
    for note in cpu.notes:
        print(note)


if __name__ == "__main__":
    if sys.argv[1:2] == ["produce"]:
        asyncio.run(_producer_process(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
    else:
        asyncio.run(_append_only(int(os.environ.get("BENCH_EVENTS", "20000")),
                                 inline=os.environ.get("BENCH_INLINE_PRODUCER", "") == "1"))
