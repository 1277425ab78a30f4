"""One chaos run: start the stack, load it, kill its parts one at a time, drain, and check from the outside."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx

from chaos.kill import COMPONENTS, SERVICES, Kill, kill_and_wait
from chaos.load import SteadyLoad, integrations_env
from chaos.observe import Observer
from common.tokens import issue_person_token
from devstack.launch import LaunchedStack, launch

WANTED_METRICS = ("consumer_lag", "outbox_backlog")


@dataclass(frozen=True)
class ChaosConfig:
    duration: float = 300.0  # seconds of load
    rate: float = 5.0  # reports per second
    kills: int = 12
    seed: int = 1
    components: tuple[str, ...] = COMPONENTS
    drain_timeout: float = 300.0  # after the load stops, how long everything may take to come through
    # Notify's digest window and send lease, shortened from 120 s so that a run of minutes sees digests close
    # and an unrecorded send retried; both are ordinary settings (THROTTLE_WINDOW_SECONDS, SEND_LEASE_SECONDS).
    # The lease stays above notify's SMTP timeout (30 s), or a slow send could be claimed and sent again.
    throttle_window: float = 10.0
    send_lease: float = 45.0
    keep_var: bool = False


@dataclass
class ChaosResult:
    config: ChaosConfig
    kills: list[Kill]
    accepted: int
    sent: int
    not_accepted: dict[int, int]
    reports_lost: int
    reports_triaged_twice: int
    notifications_requested: int
    notifications_lost: int
    audit_gaps: int
    audit_duplicates: int
    chain_problems: list[str]
    dead_letters: int
    unreadable_messages: int
    duplicates_by_component: Counter[str] = field(default_factory=Counter)
    duplicate_ids: list[str] = field(default_factory=list)
    drained_after: float | None = None
    var: Path | None = None
    metrics_missing: dict[str, list[str]] = field(default_factory=dict)  # service -> metrics it lacks

    def kills_of(self, component: str) -> int:
        return sum(1 for k in self.kills if k.component == component)

    @property
    def failures(self) -> list[str]:
        """What broke the promises; empty when the run passed."""
        problems = [
            f"{name}: {value}" for name, value in (
                ("reports lost", self.reports_lost), ("reports triaged twice", self.reports_triaged_twice),
                ("notifications lost", self.notifications_lost), ("audit gaps", self.audit_gaps),
                ("audit duplicates", self.audit_duplicates), ("dead letters", self.dead_letters),
            ) if value
        ]
        problems += [f"audit chain: {p}" for p in self.chain_problems]
        for component, n in sorted(self.duplicates_by_component.items()):
            bound = self.kills_of("notify") if component == "notify" else 0
            if n > bound:
                problems.append(f"{n} duplicate deliveries after {component} kills (allowed: {bound})")
        return problems


def machine() -> str:
    cpus = os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()}, {cpus} cores, {mem:.0f} GiB, Python {platform.python_version()}"


def schedule(config: ChaosConfig, rng: random.Random) -> list[tuple[float, str]]:
    """(seconds into the load, component) for each kill: one kill at a random moment of each equal slot of the
    load (after a warm-up tenth), components in shuffled rounds so that every one is killed before any twice."""
    start = config.duration * 0.1
    slot = (config.duration * 0.9) / max(1, config.kills)
    order: list[str] = []
    while len(order) < config.kills:
        round_ = list(config.components)
        rng.shuffle(round_)
        order += round_
    return [(start + i * slot + rng.uniform(0, slot * 0.5), order[i]) for i in range(config.kills)]


async def _watch(observer: Observer, stop: asyncio.Event) -> None:
    while not stop.is_set():
        observer.scan_mail()
        try:
            await observer.scan_database()
        except Exception as exc:  # noqa: BLE001 - PostgreSQL may be down or restarting: read again next time
            observer.last_error = f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def _caught_up(observer: Observer, accepted: dict[str, float], kill: Kill, limit: float) -> None:
    """Seconds from the component's return until every report accepted before its kill is through."""
    assert kill.ready_at is not None
    deadline = time.monotonic() + limit
    incidents = {i for i, at in accepted.items() if at <= kill.at}
    while time.monotonic() < deadline:
        if not any(observer.outstanding(incidents).values()):
            kill.caught_up_after = max(0.0, time.time() - kill.ready_at)
            return
        await asyncio.sleep(0.5)


async def _verify_chains(stack: LaunchedStack, schools: set[str]) -> list[str]:
    problems = []
    async with httpx.AsyncClient(base_url=stack.url("audit"), timeout=60) as client:
        for school in sorted(schools):
            token = issue_person_token(stack.token_secret, person_id="chaos-check", role="dsl", school_id=school,
                                       ttl=timedelta(minutes=10))
            answer = await client.get("/v1/audit/verify", headers={"Authorization": f"Bearer {token}"})
            if answer.status_code != 200:
                problems.append(f"{school}: verify answered {answer.status_code} {answer.text[:200]}")
            elif not answer.json().get("intact"):
                problems.append(f"{school}: {answer.json()}")
    return problems


async def _metrics_missing(stack: LaunchedStack) -> dict[str, list[str]]:
    """Which services' /metrics lack consumer lag or outbox backlog (issue 8: both must be exposed)."""
    missing = {}
    async with httpx.AsyncClient(timeout=30) as client:
        for service in SERVICES:
            try:
                text = (await client.get(f"{stack.url(service)}/metrics")).text
            except httpx.HTTPError as exc:
                missing[service] = [f"/metrics unreachable ({type(exc).__name__})"]
                continue
            names = {line.split()[0] for line in text.splitlines() if line.strip()}
            lacking = [m for m in WANTED_METRICS if f"{service}_{m}" not in names]
            if lacking:
                missing[service] = lacking
    return missing


def _attribute_duplicates(observer: Observer, kills: list[Kill]) -> tuple[Counter[str], list[str]]:
    """Each repeated Message-ID is put down to the kill between its first and its last copy (the notify kill
    if there is one, for only notify dying inside its send window explains a repeat), else to 'none'."""
    by_component: Counter[str] = Counter()
    ids = []
    for delivery in observer.seen.deliveries.values():
        if len(delivery.received) < 2:
            continue
        ids.append(delivery.message_id)
        first, last = min(delivery.received), max(delivery.received)
        between = [k for k in kills if first - 1.0 <= k.at <= last]
        culprit = next((k.component for k in between if k.component == "notify"), None)
        culprit = culprit or (between[-1].component if between else "none")
        by_component[culprit] += len(delivery.received) - 1
    return by_component, ids


async def run(config: ChaosConfig, log: Callable[[str], None] = print) -> ChaosResult:
    rng = random.Random(config.seed)
    var = Path(tempfile.mkdtemp(prefix="ose-chaos-"))
    extra = {
        "INTAKE_INTEGRATIONS": integrations_env(),
        "THROTTLE_WINDOW_SECONDS": str(config.throttle_window),
        "SEND_LEASE_SECONDS": str(config.send_lease),
        "LOG_FORMAT": "json",
    }
    with (var.parent / f"{var.name}.log").open("wb") as stack_log:
        log(f"starting the stack in {var} (its output: {stack_log.name})")
        stack = launch(extra, var=var, log=stack_log)
        try:
            return await _run(stack, config, rng, log)
        finally:
            stack.stop(remove_var=not config.keep_var)


async def _run(
    stack: LaunchedStack, config: ChaosConfig, rng: random.Random, log: Callable[[str], None]
) -> ChaosResult:
    observer = Observer(stack.admin_dsn, stack.mail_dir, stack.token_secret)
    stop_load, stop_watch = asyncio.Event(), asyncio.Event()
    load = SteadyLoad(stack.url("intake"), config.rate, rng)
    watcher = asyncio.create_task(_watch(observer, stop_watch))
    loader = asyncio.create_task(load.run(stop_load))
    began = time.monotonic()
    kills: list[Kill] = []
    catching_up: list[asyncio.Task[None]] = []
    for offset, component in schedule(config, rng):
        await asyncio.sleep(max(0.0, began + offset - time.monotonic()))
        log(f"{time.monotonic() - began:6.1f}s kill {component} ({time.strftime('%H:%M:%S', time.gmtime())} UTC)")
        kill = await kill_and_wait(stack, component)
        readyz = f"; intake /readyz just after the kill: {kill.readyz}" if kill.readyz else ""
        log(f"{time.monotonic() - began:6.1f}s {component} back: pid {kill.new_pid}, answering "
            f"{kill.ready_after:.1f}s after the kill{readyz}")
        kills.append(kill)
        catching_up.append(asyncio.create_task(
            _caught_up(observer, load.figures.accepted, kill, config.duration + config.drain_timeout)))
    await asyncio.sleep(max(0.0, began + config.duration - time.monotonic()))
    stop_load.set()
    await loader
    log(f"{time.monotonic() - began:6.1f}s load stopped: {len(load.figures.accepted)} reports accepted; draining")
    accepted = set(load.figures.accepted)
    drain_began = time.monotonic()
    drained_after = None
    while time.monotonic() - drain_began < config.drain_timeout:
        if not any(observer.outstanding(accepted).values()):
            drained_after = time.monotonic() - drain_began
            break
        await asyncio.sleep(1.0)
    await asyncio.sleep(3.0)  # let anything late (a repeat) land before the final reading
    for task in catching_up:
        task.cancel()
    stop_watch.set()
    await watcher
    observer.scan_mail()
    await observer.scan_database(everything=True)
    seen = observer.seen
    log(f"drained in {drained_after:.1f}s" if drained_after is not None else "not drained in time; "
        f"outstanding: {observer.outstanding(accepted)}")
    published = {e: key for events in seen.published.values() for e, (_, key) in events.items()}
    duplicates, duplicate_ids = _attribute_duplicates(observer, kills)
    return ChaosResult(
        config=config, kills=kills, accepted=len(accepted), sent=load.figures.sent,
        not_accepted=dict(load.figures.refused),
        reports_lost=sum(1 for i in accepted if seen.triaged[i] == 0),
        reports_triaged_twice=sum(1 for i in accepted if seen.triaged[i] > 1),
        notifications_requested=len(seen.requested),
        notifications_lost=sum(1 for n in seen.requested if n not in seen.delivered),
        audit_gaps=sum(1 for e in published if seen.audited[e] == 0),
        audit_duplicates=sum(n - 1 for n in seen.audited.values() if n > 1),
        chain_problems=await _verify_chains(stack, seen.audit_schools),
        dead_letters=len(seen.dead_letters), unreadable_messages=seen.unreadable_messages,
        duplicates_by_component=duplicates, duplicate_ids=duplicate_ids, drained_after=drained_after,
        var=stack.var if config.keep_var else None, metrics_missing=await _metrics_missing(stack),
    )
