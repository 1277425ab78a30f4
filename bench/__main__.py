"""`make bench`: start the embedded servers, run every benchmark, print one table."""

from __future__ import annotations

import asyncio
import os
import platform
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import audit, backbone, e2e, intake, notify, triage
from bench.proc import load_average

# The benchmarks run on the same embedded servers as the tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "_lib"))
from support.stack import start_embedded  # noqa: E402

N = int(os.environ.get("BENCH_EVENTS", "20000"))
AUDIT_RECORDS = int(os.environ.get("BENCH_AUDIT_RECORDS", "1000000"))
TRIAGE_REPORTS = int(os.environ.get("BENCH_TRIAGE_REPORTS", "5000"))
TRIAGE_RATE = float(os.environ.get("BENCH_TRIAGE_RATE", "500"))
NOTIFY_MESSAGES = int(os.environ.get("BENCH_NOTIFY_MESSAGES", "2000"))
NOTIFY_RATE = float(os.environ.get("BENCH_NOTIFY_RATE", "100"))
E2E_RATES = [float(r) for r in os.environ.get("BENCH_E2E_RATES", "30,100").split(",")]
STEADY_SECONDS = float(os.environ.get("BENCH_STEADY_SECONDS", "10"))  # triage, notify and e2e steady loads


def machine() -> str:
    cpus = os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()}, {cpus} cores, {mem:.0f} GiB, Python {platform.python_version()}"


Rows = list[tuple[str, str, str]]


async def on_fresh_servers(run: Callable[[Any], Awaitable[Rows]]) -> Rows:
    """Each service's benchmark (with its ceiling) on servers of its own, as `python -m bench.<service>` runs it:
    on servers that the backbone, audit and intake benchmarks had filled, triage measured 1,854-1,973 reports/s where
    it measured 2,248-2,298 on fresh servers or after any one of them alone (bench/RESULTS.md, 2026-12-06)."""
    stack = start_embedded()
    try:
        return await run(stack)
    finally:
        stack.stop()


async def _backbone_and_audit(stack: Any) -> Rows:
    ceiling = await backbone.bare_kafka(stack.bootstrap, N)
    plumbing = await backbone.outbox_to_effect(stack.admin_dsn, stack.bootstrap, N)
    rows = [
        ("backbone", "bare aiokafka produce -> consume (ceiling)", f"{ceiling:,.0f} events/s"),
        ("backbone", "outbox -> relay -> broker -> inbox -> effect", f"{plumbing:,.0f} events/s"),
        ("backbone", "plumbing / ceiling", f"{plumbing / ceiling:.0%}"),
    ]
    appended = await audit.kafka_append(stack.admin_dsn, stack.bootstrap, N)
    if appended is not None:  # None until the audit store (audit.store) is there
        rows.append(("audit", f"events appended from Kafka into the chain ({N:,})", f"{appended:,.0f} events/s"))
    return rows


async def main() -> Rows:
    chain = audit.chain_rows(audit.chain_speed(AUDIT_RECORDS))  # pure CPU: before the servers start
    rows = await on_fresh_servers(_backbone_and_audit) + chain
    if intake.available():
        rows += await on_fresh_servers(lambda s: intake.rows(s.admin_dsn, s.bootstrap))
    rows += await on_fresh_servers(
        lambda s: triage.rows(s.admin_dsn, s.bootstrap, TRIAGE_REPORTS, TRIAGE_RATE, STEADY_SECONDS))
    rows += await on_fresh_servers(
        lambda s: notify.rows(s.admin_dsn, s.bootstrap, NOTIFY_MESSAGES, NOTIFY_RATE, STEADY_SECONDS))
    # `make run`'s own servers, started once the bench's are gone.
    return rows + await e2e.rows(E2E_RATES, STEADY_SECONDS)


if __name__ == "__main__":
    rows = asyncio.run(main())
    print(f"machine: {machine()}; {N:,} events of ~400 bytes; load average at the end: "
          f"{load_average()}\n")
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    header = ("area", "measure", "result")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
