"""Intake speed over real HTTP: accepted reports/s and latency at a fixed concurrency, beside a bare FastAPI
endpoint that validates the same IncidentReport model and does no I/O (the ceiling); p99 at a steady rate.

Each server runs under uvicorn in its own process (`python -m bench.intake serve ...`); the load comes from
bench.loadgen (raw keep-alive HTTP/1.1 on asyncio streams: httpx's own CPU cost used to be the ceiling) in the
bench process, on the same machine. The machine is shared, so each phase also reports the CPU time spent per
answered request by the server, PostgreSQL, the broker and the load generator (from /proc), which other
people's load changes far less than it changes wall-clock rates.

Alone: `python -m bench.intake` (embedded servers of its own); BENCH_INTAKE_PROFILE=/tmp/i.txt adds a py-spy
profile (raw format) of the intake server during the closed loop."""

from __future__ import annotations

import asyncio
import copy
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.loadgen import Load, closed_loop, steady_rate
from bench.proc import load_average, tree_cpu
from common.incident import IncidentReport  # module level: FastAPI resolves the annotation from here

KEY = "osk_bench-key-for-school-a-000000000000000000"
ROOT = Path(__file__).resolve().parents[1]
PATH = "/v1/incidents"


def available() -> bool:
    try:
        import intake.main  # noqa: F401
    except ImportError:
        return False
    return True


def _report() -> dict[str, Any]:
    from intake.api.examples import REPORT_EXAMPLES

    body = copy.deepcopy(REPORT_EXAMPLES["inappropriate_access"])
    body["subjects"] = [{"kind": "pupil", "identifier": "UPN-A123", "year_group": "Year 6"}]
    return dict(body)


def _bare_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/incidents", status_code=202)
    async def report(body: IncidentReport) -> dict[str, str]:
        return {"status": "received", "school_id": body.school_id}

    return app


def _intake_app(admin_dsn: str, bootstrap: str, name: str) -> Any:
    from common.http import configure_logging
    from intake.config import IntakeSettings, IntegrationKey, hash_key
    from intake.main import create_app

    settings = IntakeSettings(
        database_url=admin_dsn, db_schema=f"{name}_intake", kafka_bootstrap_servers=bootstrap,
        topic_prefix=f"{name}.", token_secret="bench-token-secret-0123456789abcdef-0123456789",  # noqa: S106
        integrations=[IntegrationKey(integration_id="bench-a", key_sha256=hash_key(KEY),
                                     schools=frozenset({"school-a"}))],
    )
    configure_logging(settings)  # as `python -m intake` does: JSON lines (structlog's default is a dev console)
    return create_app(settings)


def _serve(argv: list[str]) -> None:
    import uvicorn

    from common.http import tune_gc_once_started
    from common.settings import ServiceSettings

    kind, port = argv[0], int(argv[1])
    app = _bare_app() if kind == "bare" else _intake_app(argv[2], argv[3], argv[4])
    tune_gc_once_started(app, ServiceSettings().gc_gen0_threshold)  # as common.http.serve does
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, server_header=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _runqueue_wait(pid: int) -> float:
    """Seconds the process's threads spent ready to run but waiting for a CPU (/proc/<pid>/task/*/schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError):
            continue
    return total / 1e9


@dataclass
class CpuWindow:
    """CPU seconds spent by named process trees (and this process, the load generator) over a window, and how
    long the first one (the server) waited for a CPU: on a shared machine, the share of the window it lost."""

    pids: dict[str, int]

    def __enter__(self) -> CpuWindow:
        self._start = self._now()
        self._wall = time.monotonic()
        self._waited = _runqueue_wait(next(iter(self.pids.values())))
        self.spent: dict[str, float] = {}
        return self

    def __exit__(self, *exc: object) -> None:
        self.spent = {k: v - self._start[k] for k, v in self._now().items()}
        self.wall = time.monotonic() - self._wall
        self.waited = _runqueue_wait(next(iter(self.pids.values()))) - self._waited

    def _now(self) -> dict[str, float]:
        return {**{k: tree_cpu(p) for k, p in self.pids.items()}, "load generator": time.process_time()}

    def server_seconds(self, answered: int) -> float:
        """CPU seconds the server process (the first one named) spent per answer."""
        return next(iter(self.spent.values())) / max(answered, 1)

    def per_request(self, answered: int) -> str:
        if not answered:
            return "n/a"
        parts = [f"{k} {v / answered * 1e6:,.0f}" for k, v in self.spent.items()]
        server, busy = next(iter(self.pids)), next(iter(self.spent.values()))
        return (", ".join(parts) + f" us (total {sum(self.spent.values()) / answered * 1e6:,.0f} us); {server} "
                f"busy {busy / self.wall:.0%} of the window, waited for a CPU {self.waited / self.wall:.0%}")


@dataclass(frozen=True)
class Server:
    url: str
    pid: int


@contextmanager
def _server(*args: str) -> Iterator[Server]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # The server's log lines (one per report) are written, as in production, but not onto the bench's output.
    proc = subprocess.Popen([sys.executable, "-m", "bench.intake", "serve", args[0], str(port), *args[1:]],  # noqa: S603
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{args[0]} server exited with {proc.returncode}")
            try:
                httpx.get(url + "/", timeout=1)  # any answer: lifespan is done, the server accepts
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield Server(url, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _xid(dsn: str) -> int:
    """The cluster's transaction id counter: it moves on by one for every transaction that writes (this query's
    own included), so over a window it counts the commits of intake's batches and its relay's passes."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT pg_current_xact_id()::text::bigint"))
    finally:
        await conn.close()


async def _published(url: str, timeout: float = 60.0) -> None:
    """Wait until the relay has published every accepted report (intake's /metrics outbox_backlog is 0)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url) as client:
        while time.monotonic() < deadline:
            metrics = (await client.get("/metrics")).text
            if "intake_outbox_backlog 0\n" in metrics:
                return
            await asyncio.sleep(0.1)
    raise TimeoutError("the outbox relay did not catch up")


@contextmanager
def _profiled(pid: int, seconds: float, suffix: str = "") -> Iterator[None]:
    """py-spy on the server for the window, if BENCH_INTAKE_PROFILE names an output file (+ suffix)."""
    out = os.environ.get("BENCH_INTAKE_PROFILE")
    if not out:
        yield
        return
    out += suffix
    spy = Path(sys.executable).with_name("py-spy")
    proc = subprocess.Popen([str(spy), "record", "--format", "raw", "-o", out, "--pid", str(pid),  # noqa: S603
                             "--duration", str(int(seconds) + 1), "--nonblocking"])
    try:
        yield
    finally:
        proc.wait(timeout=60)


async def rows(admin_dsn: str, bootstrap: str, concurrency: int = 32, seconds: float = 10.0,
               rate: float = 500.0, servers: dict[str, int] | None = None) -> list[tuple[str, str, str]]:
    """`servers`: pids of the PostgreSQL and broker processes, to measure their CPU per request too."""
    import uuid

    body, headers = _report(), {"X-API-Key": KEY}
    others = servers or {}
    with _server("bare") as bare_server, CpuWindow({"server": bare_server.pid}) as bare_cpu:
        bare = await closed_loop(bare_server.url, PATH, body, headers, concurrency=concurrency, seconds=seconds,
                                 expect=202)
    commits: dict[str, int] = {}
    with _server("intake", admin_dsn, bootstrap, "i" + uuid.uuid4().hex[:8]) as server:
        xid = await _xid(admin_dsn)
        with CpuWindow({"intake": server.pid, **others}) as real_cpu, _profiled(server.pid, seconds + 1):
            real = await closed_loop(server.url, PATH, body, headers, concurrency=concurrency, seconds=seconds,
                                     expect=202)
            await _published(server.url)  # the relay's work for these reports is part of their cost
        commits["real"], xid = await _xid(admin_dsn) - xid - 1, await _xid(admin_dsn)
        keyed_headers = {**headers, "Idempotency-Key": "bench-{seq}"}  # a key of its own for every report
        with CpuWindow({"intake": server.pid, **others}) as keyed_cpu:
            keyed = await closed_loop(server.url, PATH, body, keyed_headers, concurrency=concurrency,
                                      seconds=seconds, expect=202)
            await _published(server.url)
        commits["keyed"], xid = await _xid(admin_dsn) - xid - 1, await _xid(admin_dsn)
        with CpuWindow({"intake": server.pid, **others}) as steady_cpu, _profiled(server.pid, seconds, ".steady"):
            steady = await steady_rate(server.url, PATH, body, headers, rate=rate, seconds=seconds, expect=202)
            await _published(server.url)
        commits["steady"] = await _xid(admin_dsn) - xid - 1

    def lat(x: Load) -> str:
        return f"p50 {x.p50_ms:.1f} ms, p99 {x.p99_ms:.1f} ms" + (f", {x.errors} errors" if x.errors else "")

    def per_report(what: str, x: Load) -> str:
        return f"{commits[what] / max(x.answered, 1):.2f} write transactions per report (batches + relay passes)"

    def answered(x: Load) -> int:
        # The CPU windows include the warm-up second and the drain: count every answer in them.
        return x.answered

    c = f"{concurrency} clients"
    return [
        ("intake", f"bare FastAPI, validate IncidentReport, {c} (ceiling)", f"{bare.per_second:,.0f} reports/s"),
        ("intake", f"bare FastAPI latency, {c}", lat(bare)),
        ("intake", f"bare FastAPI CPU per request, {c}", bare_cpu.per_request(answered(bare))),
        ("intake", f"POST /v1/incidents accepted (202), {c}", f"{real.per_second:,.0f} reports/s"),
        ("intake", f"POST /v1/incidents latency, {c}", lat(real)),
        ("intake", f"POST /v1/incidents CPU per accepted report, {c}", real_cpu.per_request(answered(real))),
        ("intake", f"POST /v1/incidents PostgreSQL commits, {c}", per_report("real", real)),
        ("intake", "intake / ceiling", f"{real.per_second / bare.per_second:.0%}"),
        # Each server is one process on one core: its CPU per request bounds what it can answer, whatever the
        # machine's other users take from it during one run or the other.
        ("intake", "intake / ceiling by server CPU per request",
         f"{bare_cpu.server_seconds(answered(bare)) / real_cpu.server_seconds(answered(real)):.0%}"),
        ("intake", f"POST /v1/incidents with an Idempotency-Key each, {c}",
         f"{keyed.per_second:,.0f} reports/s, " + lat(keyed)),
        ("intake", f"POST /v1/incidents with an Idempotency-Key each, CPU per report, {c}",
         keyed_cpu.per_request(answered(keyed))),
        ("intake", f"POST /v1/incidents with an Idempotency-Key each, PostgreSQL commits, {c}",
         per_report("keyed", keyed)),
        ("intake", f"POST /v1/incidents at a steady {rate:,.0f}/s for {seconds:.0f} s",
         f"{steady.per_second:,.0f} accepted/s, " + lat(steady)),
        ("intake", f"POST /v1/incidents CPU per report at a steady {rate:,.0f}/s",
         steady_cpu.per_request(answered(steady))),
        ("intake", f"POST /v1/incidents PostgreSQL commits at a steady {rate:,.0f}/s", per_report("steady", steady)),
    ]


@contextmanager
def _durable_postgres() -> Iterator[tuple[str, int]]:
    """A PostgreSQL of its own with fsync and synchronous commit on, as `make run` has: the test clusters trade
    crash safety for speed (fsync=off, synchronous_commit=off), so a commit there never waits for the disk."""
    import shutil
    import tempfile

    from devstack.ports import free_port, wait_for_port
    from devstack.postgres import PostgresLayout, command, dsn, prepare, run_as_user

    root = Path(tempfile.mkdtemp(prefix="bench-intake-pg-"))
    root.chmod(0o755)  # noqa: S103 - PostgreSQL runs as its own OS user and must reach its data dir
    layout = PostgresLayout(root / "postgres")
    password, port = prepare(layout), free_port()
    proc = subprocess.Popen(command(layout, port, durable=True), user=run_as_user(),  # noqa: S603
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, what="PostgreSQL")
        yield dsn(port, password), proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


async def _alone() -> list[tuple[str, str, str]]:
    """BENCH_INTAKE_DURABLE=1: intake's database commits to disk (see `_durable_postgres`)."""
    sys.path.insert(0, str(ROOT / "tests" / "_lib"))
    from support.stack import start_embedded

    stack = start_embedded()
    assert stack._pg is not None and stack._broker is not None
    concurrency = int(os.environ.get("BENCH_INTAKE_CONCURRENCY", "32"))
    seconds = float(os.environ.get("BENCH_STEADY_SECONDS", "10"))
    try:
        if os.environ.get("BENCH_INTAKE_DURABLE") == "1":
            with _durable_postgres() as (dsn, pg_pid):
                return await rows(dsn, stack.bootstrap, concurrency, seconds,
                                  servers={"PostgreSQL": pg_pid, "broker": stack._broker.pid})
        return await rows(stack.admin_dsn, stack.bootstrap, concurrency, seconds,
                          servers={"PostgreSQL": stack._pg.pid, "broker": stack._broker.pid})
    finally:
        stack.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        _serve(sys.argv[2:])
    else:
        before = load_average()
        table = asyncio.run(_alone())
        print(f"load average before: {before}; after: {load_average()}")
        for _, measure, result in table:
            print(f"{measure:<70} {result}")
