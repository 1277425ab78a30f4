"""End to end: `POST /v1/incidents` to the email accepted by the SMTP sink, p50/p99 at a steady rate.

The whole system runs as `make run` starts it (`python -m devstack run` in a temporary var dir on free
ports): its own embedded PostgreSQL and broker, the SMTP sink, and intake, triage, notify and audit each in
its own process with their default settings. That is the deployment this figure is about, and it spreads
the services over both cores the way a real run does; in-process services on the bench's servers would put
triage, notify, the load generator and the receiver under one GIL and measure that instead. The cost is a
start-up of some 20-40 s, outside the clock.

The reports are illegal-class (indecent images found on a school laptop): the headteacher and the DSL are
emailed at once, and the throttle never holds them. Routine classes (inappropriate access, say) are grouped
into one digest per address within the 2-minute throttle window by design, so their email delay is the window,
not the system's speed. Latency is counted from each report's scheduled send time (open loop, so waiting
behind a busy intake counts) to the first email of its incident in the sink, as the sink's own receipt time
(the file name it writes); both are wall-clock times on this machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.loadgen import Connection
from bench.proc import argv, snapshot, tree_cpu
from bench.triage import Figures, pct, report
from devstack.ports import free_port
from devstack.runfiles import wait_ready
from devstack.smtp_sink import message_paths

API_KEY = "bench-e2e-integration-key-" + "x" * 24
ROOT = Path(__file__).resolve().parents[1]
_REFERENCE = re.compile(rb"OSI-[0-9A-Z]{6}")


def _start(var: Path, ports: dict[str, int]) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DEVSTACK_VAR_DIR": str(var),
        **{f"DEVSTACK_{name}_PORT": str(port) for name, port in ports.items()},
        "INTAKE_INTEGRATIONS": json.dumps(
            [{"integration_id": "bench-e2e", "key_sha256": hashlib.sha256(API_KEY.encode()).hexdigest(),
              "schools": ["school-a"]}]
        ),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    for inherited in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "SMTP_HOST", "SMTP_PORT"):
        env.pop(inherited, None)
    log = (var / "devstack.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "devstack", "run"], env=env, cwd=ROOT,  # noqa: S603
                            start_new_session=True, stdout=log, stderr=subprocess.STDOUT)


def _cpu_seconds(devstack: int) -> dict[str, float]:
    """CPU seconds used so far by each part of the stack that `devstack` started: a service by its module, the
    broker, the SMTP sink, PostgreSQL with every backend and worker under it (bench.proc.tree_cpu)."""
    processes = snapshot()
    used: dict[str, float] = {}
    for child in (p for p in processes.values() if p.ppid == devstack):
        words = argv(child.pid)
        module = words[words.index("-m") + 1] if "-m" in words[:-1] else None
        part = module.removeprefix("devstack.") if module else child.name
        used[part] = used.get(part, 0.0) + tree_cpu(child.pid, processes)
    return used


def _received_at(path: Path) -> float:
    """The sink names each file after its UTC time of receipt: `20261123T101500.123456Z-<id>.eml`."""
    stamp = path.name.split("-", 1)[0]
    return datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC).timestamp()


class Mailbox:
    """The first arrival of each incident reference in the sink's folder, read as files appear."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._read: set[Path] = set()
        self.first: dict[str, float] = {}
        self.messages = 0

    def scan(self) -> None:
        for path in message_paths(self._folder):
            if path in self._read:
                continue
            self._read.add(path)
            self.messages += 1
            found = _REFERENCE.search(path.read_bytes())
            if found:
                ref = found.group().decode()
                self.first[ref] = min(self.first.get(ref, float("inf")), _received_at(path))

    async def wait_for(self, refs: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.scan()
            missing = [r for r in refs if r not in self.first]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} of {len(refs)} incidents never reached the SMTP sink")
            await asyncio.sleep(0.2)


async def steady(
    intake: str, mailbox: Mailbox, rate: float, seconds: float, devstack: int, clients: int = 32
) -> tuple[Figures, int, dict[str, float]]:
    """Reports on a fixed schedule over a pool of keep-alive connections (bench.loadgen's raw HTTP/1.1, whose
    CPU cost is tens of microseconds a request; httpx's millisecond competed with the system for the 2 cores);
    returns the figures, how many POSTs were not accepted, and the CPU seconds each part of the stack (and
    the load generator) used from the first report until the last email arrived."""
    body = report(0)  # illegal class: child sexual abuse imagery
    headers = {"X-API-Key": API_KEY}
    scheduled: dict[str, float] = {}
    errors = [0]
    idle: asyncio.Queue[Connection] = asyncio.Queue()

    async def one(wall_at: float | None) -> str | None:
        conn = await idle.get()
        try:
            status, answer = await conn.exchange()
        except (ConnectionError, OSError):  # the server closed it (a restart, say): a refusal, on a new one
            await conn.close_quietly()
            conn = await Connection.open(intake, "/v1/incidents", body, headers)
            status, answer = 0, b""
        finally:
            idle.put_nowait(conn)
        if status != 202:
            errors[0] += 1
            return None
        ref = str(json.loads(answer)["reference"])
        if wall_at is not None:
            scheduled[ref] = wall_at
        return ref

    async def connect() -> None:
        for _ in range(clients):
            idle.put_nowait(await Connection.open(intake, "/v1/incidents", body, headers))

    async def close() -> None:
        pool = []
        while not idle.empty():
            pool.append(idle.get_nowait())
        await asyncio.gather(*(c.close_quietly() for c in pool))

    # Warm-up: every service has seen a report. The server closes keep-alive connections idle for 5 s, so the
    # timed run opens its own.
    await connect()
    try:
        warm = await asyncio.gather(*(one(None) for _ in range(clients)))
    finally:
        await close()
    await mailbox.wait_for([r for r in warm if r], timeout=180)
    errors[0] = 0
    await connect()
    cpu_before, own_before = _cpu_seconds(devstack), time.process_time()
    try:
        start = time.perf_counter() + 0.1
        wall0 = time.time() - time.perf_counter()
        tasks = []
        for i in range(int(rate * seconds)):
            at = start + i / rate
            if (delay := at - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(wall0 + at)))
        await asyncio.gather(*tasks)
    finally:
        await close()
    await mailbox.wait_for(list(scheduled), timeout=600)
    cpu = {part: used - cpu_before.get(part, 0.0) for part, used in _cpu_seconds(devstack).items()}
    cpu["load generator"] = time.process_time() - own_before
    lat = sorted(mailbox.first[r] - t for r, t in scheduled.items())
    end = max(mailbox.first[r] for r in scheduled)
    first = min(scheduled.values())
    figures = Figures(len(scheduled) / (end - first), pct(lat, 0.5), pct(lat, 0.99), len(scheduled))
    return figures, errors[0], cpu


def _rows_for(
    rate: float, seconds: float, figures: Figures, errors: int, cpu: dict[str, float]
) -> list[tuple[str, str, str]]:
    label = f"POST /v1/incidents -> email in the SMTP sink, `make run`, a steady {rate:,.0f}/s for {seconds:.0f} s"
    note = f", {errors} POSTs refused" if errors else ""
    per_report = {part: used / figures.count * 1000 for part, used in cpu.items() if used > 0}
    total = sum(per_report.values())
    parts = ", ".join(f"{part} {ms:.1f}" for part, ms in sorted(per_report.items(), key=lambda kv: -kv[1]))
    return [
        ("e2e", label, figures.latency() + f" ({figures.count:,} incidents{note})"),
        ("e2e", f"CPU per report at {rate:,.0f}/s, by process (ms)", f"{total:.1f} in all: {parts}"),
    ]


async def rows(rates: list[float], seconds: float = 10.0) -> list[tuple[str, str, str]]:
    """One `make run` stack; a steady run at each rate in turn (each after its own warm-up)."""
    var = Path(tempfile.mkdtemp(prefix="ose-bench-e2e-"))
    var.chmod(0o755)  # noqa: S103 - PostgreSQL runs as its own OS user and must reach its data dir
    ports = {name: free_port() for name in ("POSTGRES", "BROKER", "SMTP", "INTAKE", "TRIAGE", "NOTIFY", "AUDIT", "WEB")}
    proc = _start(var, ports)
    table: list[tuple[str, str, str]] = []
    try:
        state: dict[str, Any] = await asyncio.to_thread(wait_ready, var, 180)
        mailbox = Mailbox(Path(state["mail_dir"]))
        for rate in rates:
            figures, errors, cpu = await steady(f"http://127.0.0.1:{ports['INTAKE']}", mailbox, rate, seconds, proc.pid)
            table += _rows_for(rate, seconds, figures, errors, cpu)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(var, ignore_errors=True)
    return table


if __name__ == "__main__":  # python -m bench.e2e [rate ...]: only these rows
    for row in asyncio.run(rows([float(r) for r in sys.argv[1:]] or [100.0])):
        print(" | ".join(row))
