"""Killing one supervised component with SIGKILL and watching the supervisor bring it back.

The devstack supervisor starts every child in its own process group and records each child's pid in the
stack's state file (`devstack.json`, rewritten at every restart), so the pid to kill and the restart are
both read from there. PostgreSQL's backends make themselves process-group leaders of their own, so for it
the whole process tree is killed, or an orphaned backend would keep the shared memory and the next
postmaster would refuse to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass

import asyncpg
import httpx
import psutil

from devstack.launch import LaunchedStack
from devstack.ports import port_is_open

SERVICES = ("intake", "triage", "notify", "audit")
COMPONENTS = ("broker", "postgres", *SERVICES)


@dataclass
class Kill:
    component: str
    pid: int
    at: float  # wall time of the SIGKILL
    at_monotonic: float
    new_pid: int | None = None
    restarted_after: float | None = None  # seconds from the kill to the new process
    ready_after: float | None = None  # seconds from the kill to the component answering again
    ready_at: float | None = None  # wall time
    caught_up_after: float | None = None  # seconds from ready to everything accepted before the kill done
    readyz: str = ""  # what intake's /readyz said just after a broker or PostgreSQL kill


def kill_tree(pid: int) -> None:
    """SIGKILL a child's process group and every process below it (whatever group they made their own)."""
    try:
        below = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        below = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for process in below:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)


async def _ready(stack: LaunchedStack, component: str) -> bool:
    if component in SERVICES:
        try:
            async with httpx.AsyncClient(timeout=3) as client:
                return (await client.get(f"{stack.url(component)}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False
    if component == "postgres":
        try:
            conn = await asyncpg.connect(stack.admin_dsn, timeout=3)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return False
        await conn.close()
        return True
    return await asyncio.to_thread(port_is_open, "127.0.0.1", stack.ports[component])


async def _intake_readyz(stack: LaunchedStack) -> str:
    try:
        async with httpx.AsyncClient(timeout=6) as client:
            answer = await client.get(f"{stack.url('intake')}/readyz")
    except httpx.HTTPError as exc:
        return f"no answer ({type(exc).__name__})"
    down = [f"{name} {state.split(':')[0]}" for name, state in answer.json().get("dependencies", {}).items()
            if state != "ok"]
    return f"{answer.status_code} " + (", ".join(down) if down else "all ok")


async def kill_and_wait(stack: LaunchedStack, component: str, within: float = 180.0) -> Kill:
    """Kill `component` and return once the supervisor has restarted it and it answers again."""
    pid = int(stack.children()[component]["pid"])
    kill = Kill(component, pid, time.time(), time.monotonic())
    kill_tree(pid)
    if component in ("broker", "postgres"):
        kill.readyz = await _intake_readyz(stack)
    deadline = kill.at_monotonic + within
    while time.monotonic() < deadline:
        current = int(stack.children().get(component, {}).get("pid", pid))
        if current != pid and kill.new_pid is None:
            kill.new_pid = current
            kill.restarted_after = time.monotonic() - kill.at_monotonic
        if kill.new_pid is not None and await _ready(stack, component):
            kill.ready_after = time.monotonic() - kill.at_monotonic
            kill.ready_at = time.time()
            return kill
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{component} was not back within {within:.0f}s of its SIGKILL (pid {pid})")
