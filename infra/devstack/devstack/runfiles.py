"""The supervisor's own files under var/: a pid file (one stack at a time) and a state file (pids, endpoints, env).

A supervisor that was killed outright (SIGKILL, power loss) leaves both behind, and maybe its children too.
The next run recognises that the pid is no longer a supervisor, stops the children the state file lists (only
if they are still the very processes that were started, judged by their start time), and carries on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil


class AlreadyRunning(RuntimeError):
    pass


def _process_start_time(pid: int) -> float | None:
    """When a live process started (None if it is gone or a zombie): a pid plus this names one process."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(process.create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None


def _write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class RunFiles:
    """`<var>/devstack.pid` and `<var>/devstack.json`."""

    def __init__(self, var_dir: Path) -> None:
        self.pid_file = var_dir / "devstack.pid"
        self.state_file = var_dir / "devstack.json"
        self._state: dict[str, Any] = {}

    def claim(self, log: Any = print) -> None:
        """Become the one running supervisor, cleaning up after a dead predecessor; AlreadyRunning if alive."""
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        previous = self._read_pid()
        if previous is not None and previous != os.getpid():
            if self._is_supervisor(previous):
                raise AlreadyRunning(
                    f"another devstack supervisor is running (pid {previous}, {self.pid_file}); "
                    f"stop it with Ctrl-C or `kill {previous}` first"
                )
            log(f"removing stale pid file {self.pid_file} left by pid {previous}, which is no longer running")
            self.stop_orphans(log)
        self.pid_file.unlink(missing_ok=True)
        self.state_file.unlink(missing_ok=True)
        _write_atomically(self.pid_file, f"{os.getpid()}\n")
        self._state = {"supervisor_pid": os.getpid(), "status": "starting", "children": {}}
        self._flush()

    def release(self, *, keep_state: bool = False) -> None:
        """Remove our files; `keep_state` leaves the state (e.g. status "failed") for whoever waits on it."""
        if self._read_pid() == os.getpid():
            if not keep_state:
                self.state_file.unlink(missing_ok=True)
            self.pid_file.unlink(missing_ok=True)

    def update(self, **fields: Any) -> None:
        self._state.update(fields)
        self._flush()

    def record_child(self, name: str, pid: int, stop_signal: int, signal_group: bool) -> None:
        self._state.setdefault("children", {})[name] = {
            "pid": pid, "start_time": _process_start_time(pid), "stop_signal": int(stop_signal),
            "signal_group": signal_group,
        }
        self._flush()

    def stop_orphans(self, log: Any = print) -> None:
        """Stop children recorded by a supervisor that died without stopping them."""
        try:
            children = json.loads(self.state_file.read_text()).get("children", {})
        except (OSError, ValueError):
            return
        for name, info in children.items():
            pid = int(info["pid"])
            if info.get("start_time") is None or _process_start_time(pid) != info["start_time"]:
                continue  # gone, or the pid now belongs to someone else
            log(f"stopping {name} (pid {pid}), left running by the previous supervisor")
            with contextlib.suppress(ProcessLookupError):
                if info.get("signal_group", True):
                    os.killpg(pid, int(info["stop_signal"]))
                else:
                    os.kill(pid, int(info["stop_signal"]))
            deadline = time.monotonic() + 15.0
            while time.monotonic() < deadline and _process_start_time(pid) == info["start_time"]:
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    def _flush(self) -> None:
        # 0600: the state holds the database DSN with the superuser password.
        _write_atomically(self.state_file, json.dumps(self._state, indent=2, sort_keys=True), 0o600)

    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @staticmethod
    def _is_supervisor(pid: int) -> bool:
        try:
            cmdline = " ".join(psutil.Process(pid).cmdline())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return False
        except psutil.AccessDenied:
            return True  # alive and not ours to inspect: be safe
        return "devstack" in cmdline


def read_state(var_dir: Path) -> dict[str, Any]:
    """The running stack's state (status, endpoints, env); FileNotFoundError if none is running."""
    data: dict[str, Any] = json.loads((var_dir / "devstack.json").read_text())
    return data


def wait_ready(var_dir: Path, timeout: float = 60.0) -> dict[str, Any]:
    """Block until a supervisor using `var_dir` reports every component ready; return its state."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError):
            last = read_state(var_dir)
            if last.get("status") == "ready":
                return last
            if last.get("status") == "failed":
                raise RuntimeError(f"devstack failed to start: {last.get('error')}")
        time.sleep(0.1)
    raise TimeoutError(f"devstack in {var_dir} not ready within {timeout:.0f}s (last state: {last.get('status')})")
