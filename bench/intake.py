"""Intake speed over real HTTP: accepted reports/s and latency at a fixed concurrency, beside a bare FastAPI
endpoint that validates the same IncidentReport model and does no I/O (the ceiling); p99 at a steady rate.

Each server runs under uvicorn in its own process (`python -m bench.intake serve ...`); the load comes from
bench.loadgen (raw keep-alive HTTP/1.1 on asyncio streams: httpx's own CPU cost used to be the ceiling) in the
bench process, on the same machine."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.loadgen import Load, closed_loop, steady_rate
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
    from intake.config import IntakeSettings, IntegrationKey, hash_key
    from intake.main import create_app

    settings = IntakeSettings(
        database_url=admin_dsn, db_schema=f"{name}_intake", kafka_bootstrap_servers=bootstrap,
        topic_prefix=f"{name}.", token_secret="bench-token-secret-0123456789abcdef-0123456789",  # noqa: S106
        integrations=[IntegrationKey(integration_id="bench-a", key_sha256=hash_key(KEY),
                                     schools=frozenset({"school-a"}))],
    )
    return create_app(settings)


def _serve(argv: list[str]) -> None:
    import uvicorn

    kind, port = argv[0], int(argv[1])
    app = _bare_app() if kind == "bare" else _intake_app(argv[2], argv[3], argv[4])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, server_header=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _server(*args: str) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "bench.intake", "serve", args[0], str(port), *args[1:]],  # noqa: S603
                            cwd=ROOT, env=env)
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
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def rows(admin_dsn: str, bootstrap: str, concurrency: int = 32, seconds: float = 10.0,
               rate: float = 500.0) -> list[tuple[str, str, str]]:
    import uuid

    body, headers = _report(), {"X-API-Key": KEY}
    with _server("bare") as url:
        bare = await closed_loop(url, PATH, body, headers, concurrency=concurrency, seconds=seconds, expect=202)
    with _server("intake", admin_dsn, bootstrap, "i" + uuid.uuid4().hex[:8]) as url:
        real = await closed_loop(url, PATH, body, headers, concurrency=concurrency, seconds=seconds, expect=202)
        steady = await steady_rate(url, PATH, body, headers, rate=rate, seconds=seconds, expect=202)

    def lat(x: Load) -> str:
        return f"p50 {x.p50_ms:.1f} ms, p99 {x.p99_ms:.1f} ms" + (f", {x.errors} errors" if x.errors else "")

    c = f"{concurrency} clients"
    return [
        ("intake", f"bare FastAPI, validate IncidentReport, {c} (ceiling)", f"{bare.per_second:,.0f} reports/s"),
        ("intake", f"bare FastAPI latency, {c}", lat(bare)),
        ("intake", f"POST /v1/incidents accepted (202), {c}", f"{real.per_second:,.0f} reports/s"),
        ("intake", f"POST /v1/incidents latency, {c}", lat(real)),
        ("intake", "intake / ceiling", f"{real.per_second / bare.per_second:.0%}"),
        ("intake", f"POST /v1/incidents at a steady {rate:,.0f}/s for {seconds:.0f} s",
         f"{steady.per_second:,.0f} accepted/s, " + lat(steady)),
    ]


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    _serve(sys.argv[2:])
