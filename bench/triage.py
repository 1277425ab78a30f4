"""Triage speed: reports triaged/s and the delay from `incidents.reported` to `notifications.requested`.

The real triage service (`TriageRuntime`: its consumer with inbox, classification, escalation plan, state in
PostgreSQL, outbox relay, timer loop) runs in a process of its own (`python -m bench.triage serve ...`, as in
production), on the embedded servers. Reports shaped as
intake publishes them (four classes round robin: illegal, youth-produced imagery, inappropriate, security) are
produced with aiokafka; a reader on the output topics notes when each incident's `incidents.triaged` and first
`notifications.requested` arrive. An incident counts as triaged when both have arrived.

The ceiling is the same pipeline with a bare handler (a `Runtime` whose `incidents.reported` handler only
enqueues one `notifications.requested`): broker -> consumer + inbox -> outbox -> relay -> broker -> reader,
in the same run, so triage's own cost is what the two differ by.

Until 2026-11-23 the service ran in the bench process, on one event loop with the bench's producer and reader:
the reader noted arrivals late whenever a batch held the loop, and with aiokafka's default fetch wait (500 ms, on
a broker that answers a fetch only when the wait is over) it added up to half a second to every delay measured.

CPU per report over each burst, because wall figures on a shared 2-core machine move with the neighbours: the
service's process, the embedded servers (PostgreSQL and the broker), and the bench's own producer and reader.
`python -m bench.triage` runs these rows alone on fresh embedded servers and prints the load average around them.
"""

from __future__ import annotations

import asyncio
import copy
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.proc import below_cpu, load_average, process, snapshot
from common.db import Connection
from common.events import CloudEvent, new_event
from common.http import tune_gc
from common.outbox import enqueue
from common.runtime import Runtime, ServiceSpec
from common.settings import ServiceSettings
from common.topics import EventType, Topic, consumers_of

_EVIDENCE = {"device": "school laptop asset 4471", "location": "locked cupboard", "isolated_from_network": True}
REPORTS: tuple[dict[str, Any], ...] = (
    {"category": "child_sexual_abuse_imagery", "risk_area": "content", "subjects": [{"kind": "unknown"}],
     "where": "ICT suite", "description": "Indecent images of children found on a shared laptop during a check."},
    {"category": "youth_produced_sexual_imagery", "risk_area": "conduct", "where": "Year 9 group chat",
     "subjects": [{"kind": "pupil", "identifier": "UPN-B456", "age": 14}],
     "description": "A pupil says an image of them is being shared in a group chat. Not viewed by staff."},
    {"category": "inappropriate_access_accidental", "risk_area": "content", "where": "ICT suite",
     "subjects": [{"kind": "pupil", "identifier": "UPN-A123", "year_group": "Year 6"}],
     "description": "Pupil opened a gambling site by mistake and told the teacher at once."},
    {"category": "lost_or_stolen_equipment", "risk_area": "commerce", "where": "staff car park",
     "subjects": [{"kind": "staff"}], "description": "An unencrypted school laptop was stolen from a car."},
)


def report(i: int, school_id: str = "school-a") -> dict[str, Any]:
    body = copy.deepcopy(REPORTS[i % len(REPORTS)])
    return {"school_id": school_id, "reporter": {"role": "class teacher"}, "occurred_at": "2026-11-23T09:30:00Z",
            "evidence": dict(_EVIDENCE), **body}


def reported(i: int) -> CloudEvent:
    incident_id = str(uuid.uuid4())
    return new_event(
        EventType.INCIDENT_REPORTED, source="bench", subject=incident_id, schoolid="school-a",
        data={"incident_id": incident_id, "reference": f"OSI-{i:05d}"[-9:], "integration_id": "bench",
              "report": report(i)},
    )


def _children_cpu_seconds() -> tuple[float, float]:
    """CPU of every process descended from this one, and of the broker's among them."""
    processes = snapshot()
    return below_cpu(os.getpid(), processes), below_cpu(os.getpid(), processes, name="tansu")


@dataclass(frozen=True)
class Cpu:
    """CPU seconds: `bench` is this process (the bench's producer and reader), `descendants` every process it
    started (the service under test, and the embedded PostgreSQL and broker when it started them)."""

    bench: float
    descendants: float
    broker: float  # of the descendants

    @classmethod
    def now(cls) -> Cpu:
        return cls(time.process_time(), *_children_cpu_seconds())

    def since(self, start: Cpu) -> Cpu:
        return Cpu(self.bench - start.bench, self.descendants - start.descendants, self.broker - start.broker)


@dataclass(frozen=True)
class Figures:
    per_s: float
    p50_ms: float
    p99_ms: float
    count: int
    cpu: Cpu | None = None
    service_cpu: float | None = None  # the service under test's process, over the same measure
    # Per incident key, (scheduled, first notice read) in wall-clock seconds: for the stages of a steady run.
    timeline: dict[bytes, tuple[float, float]] | None = field(default=None, repr=False)

    def latency(self) -> str:
        return f"p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms"

    def cpu_per_report(self) -> str:
        if self.cpu is None or self.service_cpu is None:
            return "not measured"
        ms = 1000 / self.count
        postgres = self.cpu.descendants - self.service_cpu - self.cpu.broker
        return (f"service {self.service_cpu * ms:.2f} ms, PostgreSQL {postgres * ms:.2f} ms, "
                f"broker {self.cpu.broker * ms:.2f} ms, bench producer + reader {self.cpu.bench * ms:.2f} ms")


def pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] * 1000


class Outputs:
    """Reads the output topics from the start; notes, per incident (the record key), when each arrived."""

    def __init__(self, bootstrap: str, topics: list[str], required: int,
                 downstream: dict[str, list[str]] | None = None) -> None:
        # Tansu answers a fetch when its wait is over, not when a record arrives: with aiokafka's default wait
        # (500 ms) the reader itself added up to half a second to every delay it measured.
        self._consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                          metadata_max_age_ms=1000, enable_auto_commit=False, fetch_max_wait_ms=10)
        self._bootstrap = bootstrap
        # Physical topic -> the consumer groups that would read it in production (`common.topics.consumers_of`):
        # what the reader has read is committed for them once a second, as they would commit it. Without it the
        # service's broker watch saw nobody consume, so its safe points never moved and every check went over the
        # whole outbox, holding the relay's lock (steady p99 up to twice as high).
        self._downstream = downstream or {}
        self._read_up_to: dict[TopicPartition, int] = {}
        self._committing: asyncio.Task[None] | None = None
        self._required = required  # how many of the topics an incident must appear on
        self._seen: dict[bytes, set[str]] = {}
        self.first: dict[bytes, float] = {}  # first record on the last topic in `topics`
        self.done: dict[bytes, float] = {}
        self._last_topic = topics[-1]
        self._waiters: list[tuple[Callable[[], bool], asyncio.Event]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._read())
        self._committing = asyncio.create_task(self._commit_for_downstream()) if self._downstream else None

    async def stop(self) -> None:
        for task in (self._task, self._committing):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._consumer.stop()

    async def _commit_for_downstream(self) -> None:
        groups = sorted({g for gs in self._downstream.values() for g in gs})
        committers = {g: AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=g, enable_auto_commit=False)
                      for g in groups}
        try:
            for c in committers.values():
                await c.start()
            while True:
                await asyncio.sleep(1.0)
                for group, committer in committers.items():
                    offsets = {tp: o for tp, o in self._read_up_to.items() if group in self._downstream[tp.topic]}
                    if offsets:
                        committer.assign(list(offsets))
                        await committer.commit(offsets)
        finally:
            for c in committers.values():
                await c.stop()

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=100, max_records=2000)
            now = time.perf_counter()
            for tp, records in batch.items():
                if records:
                    self._read_up_to[tp] = records[-1].offset + 1
                for r in records:
                    key = r.key or b""
                    if tp.topic == self._last_topic:
                        self.first.setdefault(key, now)
                    topics = self._seen.setdefault(key, set())
                    topics.add(tp.topic)
                    if len(topics) >= self._required:
                        self.done.setdefault(key, now)
            for check, event in self._waiters:
                if check():
                    event.set()

    async def wait(self, keys: list[bytes], timeout: float) -> None:
        event = asyncio.Event()

        def check() -> bool:
            return all(k in self.done for k in keys)

        self._waiters.append((check, event))
        if check():
            return
        await asyncio.wait_for(event.wait(), timeout)


async def _warm(producer: AIOKafkaProducer, topic: str, outputs: Outputs, make: Callable[[int], CloudEvent]) -> None:
    """One report through before any clock starts: every consumer has joined its group and has its metadata."""
    event = make(10**6)
    await producer.send_and_wait(topic, event.to_bytes(), key=event.key)
    await outputs.wait([event.key or b""], timeout=120)


async def burst(producer: AIOKafkaProducer, topic: str, outputs: Outputs, events: list[CloudEvent]) -> Figures:
    """All events produced as fast as the producer takes them; rate = events / (last done - first sent)."""
    sent: dict[bytes, float] = {}
    cpu = Cpu.now()
    start = time.perf_counter()
    for e in events:
        sent[e.key or b""] = time.perf_counter()
        await producer.send(topic, e.to_bytes(), key=e.key)
    await producer.flush()
    await outputs.wait(list(sent), timeout=600)
    used = Cpu.now().since(cpu)
    end = max(outputs.done[k] for k in sent)
    lat = sorted(outputs.first[k] - t for k, t in sent.items())
    return Figures(len(events) / (end - start), pct(lat, 0.5), pct(lat, 0.99), len(events), used)


async def steady(producer: AIOKafkaProducer, topic: str, outputs: Outputs, events: list[CloudEvent],
                 rate: float) -> Figures:
    """Events produced on a fixed schedule (open loop); latency from each event's scheduled time."""
    scheduled: dict[bytes, float] = {}
    start = time.perf_counter() + 0.05
    for i, e in enumerate(events):
        at = start + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        scheduled[e.key or b""] = at
        await producer.send(topic, e.to_bytes(), key=e.key)
    await producer.flush()
    await outputs.wait(list(scheduled), timeout=600)
    end = max(outputs.done[k] for k in scheduled)
    lat = sorted(outputs.first[k] - t for k, t in scheduled.items())
    wall = time.time() - time.perf_counter()  # perf_counter -> wall clock, to compare with the service's times
    timeline = {k: (t + wall, outputs.first[k] + wall) for k, t in scheduled.items()}
    return Figures(len(events) / (end - start), pct(lat, 0.5), pct(lat, 0.99), len(events), timeline=timeline)


Measure = Callable[[AIOKafkaProducer, str, Outputs], Awaitable[Figures]]


class ServiceProcess:
    """The service under test in a process of its own (as it runs in production), so that neither its CPU nor its
    event loop is shared with the bench's producer and reader. Its log goes to a file; warnings are shown."""

    def __init__(self, kind: str, admin_dsn: str, bootstrap: str, name: str) -> None:
        self.kind, self.name = kind, name
        self._args = [kind, admin_dsn, bootstrap, name]
        self._process: asyncio.subprocess.Process | None = None
        self._log = Path(f"/tmp/bench-triage-{name}.log")  # noqa: S108 - a scratch log for the person running it

    async def __aenter__(self) -> ServiceProcess:
        root = Path(__file__).resolve().parents[1]
        with self._log.open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.triage", "serve", *self._args, cwd=root, stdout=log, stderr=log,
                stdin=asyncio.subprocess.PIPE,
            )
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.close()  # the service stops when its stdin closes
        try:
            await asyncio.wait_for(self._process.wait(), 60)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()
        lines = self._log.read_text(errors="replace").splitlines()
        for line in lines:
            if "warning" in line or "error" in line.lower():
                print(f"[{self.kind}] {line}", file=sys.stderr)
        self._log.unlink(missing_ok=True)

    def cpu_seconds(self) -> float:
        assert self._process is not None
        found = process(self._process.pid)
        assert found is not None, "the service under test has gone"
        return found.cpu


async def run_pipeline(bootstrap: str, prefix: str, service: ServiceProcess, outputs: list[str], required: int,
                       measures: list[Measure]) -> list[Figures]:
    """Start the service, warm the path, then run each measure against it."""
    async with service:
        reader = Outputs(bootstrap, [prefix + t for t in outputs], required,
                         {prefix + t: [prefix + g for g in consumers_of(t)] for t in outputs})
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
        await producer.start()
        try:
            await reader.start()
            topic = prefix + Topic.INCIDENTS_REPORTED.value
            await _warm(producer, topic, reader, reported)
            figures = []
            for m in measures:
                before = service.cpu_seconds()
                figure = await m(producer, topic, reader)
                figures.append(replace(figure, service_cpu=service.cpu_seconds() - before))
            return figures
        finally:
            await producer.stop()
            await reader.stop()


def _settings(cls: type[ServiceSettings], admin_dsn: str, bootstrap: str, name: str, **extra: Any) -> Any:
    return cls(db_schema=f"{name}_svc", database_url=admin_dsn,
               kafka_bootstrap_servers=bootstrap, topic_prefix=f"{name}.", outbox_poll_seconds=1.0, **extra)


async def _bare_handler(event: CloudEvent, conn: Connection) -> None:
    incident_id = event.subject
    await enqueue(conn, [new_event(EventType.NOTIFICATION_REQUESTED, source="bench", subject=incident_id,
                                   schoolid=event.schoolid, data={"incident_id": incident_id}, caused_by=event)])


def _runtime(kind: str, admin_dsn: str, bootstrap: str, name: str) -> Runtime:
    if kind == "bare":
        return Runtime(ServiceSpec(_settings(ServiceSettings, admin_dsn, bootstrap, name, service_name="bench"), [],
                                   handlers={Topic.INCIDENTS_REPORTED.value: _bare_handler}))
    from triage.config import TriageSettings
    from triage.main import TriageRuntime

    return TriageRuntime(_settings(TriageSettings, admin_dsn, bootstrap, name))


async def _serve(kind: str, admin_dsn: str, bootstrap: str, name: str) -> None:
    """The service process: run until stdin closes."""
    runtime = _runtime(kind, admin_dsn, bootstrap, name)
    await runtime.start()
    tune_gc(runtime.settings.gc_gen0_threshold)  # as common.http.serve does for a service process once started
    try:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.buffer.read)
    finally:
        await runtime.stop()


def _measures(n: int, rate: float, seconds: float) -> list[Measure]:
    async def run_burst(p: AIOKafkaProducer, topic: str, o: Outputs) -> Figures:
        return await burst(p, topic, o, [reported(i) for i in range(n)])

    async def run_steady(p: AIOKafkaProducer, topic: str, o: Outputs) -> Figures:
        return await steady(p, topic, o, [reported(i) for i in range(int(rate * seconds))], rate)

    return [run_burst, run_steady]


async def bare(admin_dsn: str, bootstrap: str, n: int, rate: float, seconds: float) -> list[Figures]:
    name = "tb" + uuid.uuid4().hex[:8]
    service = ServiceProcess("bare", admin_dsn, bootstrap, name)
    return await run_pipeline(bootstrap, f"{name}.", service, [Topic.NOTIFICATIONS_REQUESTED.value], 1,
                              _measures(n, rate, seconds))


async def triage(admin_dsn: str, bootstrap: str, n: int, rate: float, seconds: float) -> tuple[list[Figures], str]:
    """The figures, and the stages of the steady run's delays."""
    name = "tt" + uuid.uuid4().hex[:8]
    service = ServiceProcess("triage", admin_dsn, bootstrap, name)
    outputs = [Topic.INCIDENTS_TRIAGED.value, Topic.NOTIFICATIONS_REQUESTED.value]
    figures = await run_pipeline(bootstrap, f"{name}.", service, outputs, 2, _measures(n, rate, seconds))
    return figures, await stages(admin_dsn, f"{name}_svc", figures[-1])


async def stages(admin_dsn: str, schema: str, steady_run: Figures) -> str:
    """Where a steady run's delays went, from triage's own rows (p50 / p99 of each stage): reported -> the batch
    that triaged it began (`incidents.triaged_at`: the consumer's fetch wait and queue), -> the relay took its first
    notice (`outbox.published_at`: triage's handling, commit, the relay's wake-up), -> the bench read it (the
    relay's send, the broker, the reader's fetch). A notice re-driven by the broker watch shows its last pick-up."""
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        rows = await conn.fetch(
            f"SELECT i.id, extract(epoch FROM i.triaged_at) AS triaged, "  # noqa: S608 - the bench's own schema
            f"extract(epoch FROM min(o.published_at)) AS published FROM {schema}.incidents i "
            f"JOIN {schema}.outbox o ON o.key = convert_to(i.id, 'UTF8') AND o.topic = $1 GROUP BY i.id",
            Topic.NOTIFICATIONS_REQUESTED.value,
        )
    finally:
        await conn.close()
    at = {r["id"].encode(): (float(r["triaged"]), float(r["published"])) for r in rows}
    parts: list[list[float]] = [[], [], []]
    for key, (scheduled, read) in (steady_run.timeline or {}).items():
        if key in at:
            triaged, published = at[key]
            for part, value in zip(parts, (triaged - scheduled, published - triaged, read - published), strict=True):
                part.append(value)
    names = ("to the batch", "to the relay", "to the reader")
    return ", ".join(f"{name} {pct(sorted(p), 0.5):.0f} / {pct(sorted(p), 0.99):.0f} ms"
                     for name, p in zip(names, parts, strict=True))


async def rows(admin_dsn: str, bootstrap: str, n: int = 5000, rate: float = 500.0,
               seconds: float = 10.0) -> list[tuple[str, str, str]]:
    ceiling_burst, ceiling_steady = await bare(admin_dsn, bootstrap, n, rate, seconds)
    (real_burst, real_steady), steady_stages = await triage(admin_dsn, bootstrap, n, rate, seconds)
    steady_label = f"at a steady {rate:,.0f}/s for {seconds:.0f} s"
    return [
        ("triage", f"bare handler, reported -> requested, {n:,} at once (ceiling)",
         f"{ceiling_burst.per_s:,.0f} events/s"),
        ("triage", f"reports triaged (triaged + requested out), {n:,} at once", f"{real_burst.per_s:,.0f} reports/s"),
        ("triage", "triage / ceiling", f"{real_burst.per_s / ceiling_burst.per_s:.0%}"),
        ("triage", f"bare handler: CPU per report, {n:,} at once", ceiling_burst.cpu_per_report()),
        ("triage", f"triage: CPU per report, {n:,} at once", real_burst.cpu_per_report()),
        ("triage", f"bare handler, reported -> requested, {steady_label} (ceiling)", ceiling_steady.latency()),
        ("triage", f"reported -> notifications.requested, {steady_label}", real_steady.latency()),
        ("triage", "  its stages, p50 / p99", steady_stages),
    ]


async def _alone() -> list[tuple[str, str, str]]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "_lib"))
    from support.stack import start_embedded

    stack = start_embedded()
    try:
        return await rows(stack.admin_dsn, stack.bootstrap, int(os.environ.get("BENCH_TRIAGE_REPORTS", "5000")),
                          float(os.environ.get("BENCH_TRIAGE_RATE", "500")),
                          float(os.environ.get("BENCH_STEADY_SECONDS", "10")))
    finally:
        stack.stop()


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    asyncio.run(_serve(*sys.argv[2:6]))
elif __name__ == "__main__":
    before = load_average()
    table = asyncio.run(_alone())
    print(f"load average before: {before}; after: {load_average()}")
    for _, measure, result in table:
        print(f"{measure:<80} {result}")
