"""Runs a list of components as child processes: starts them in stages, restarts one that dies with an
exponential backoff (leaving the others alone), and on Ctrl-C or SIGTERM stops them all in reverse order."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from devstack.components import Backoff, Component
from devstack.process import Child, Output
from devstack.runfiles import RunFiles


class StartupFailed(RuntimeError):
    pass


@dataclass
class _Slot:
    component: Component
    child: Child | None = None
    failures: int = 0  # consecutive, forgiven once the child stays up for backoff.reset_after
    restart_at: float | None = None
    ready: bool = False


class Supervisor:
    def __init__(
        self,
        components: Sequence[Component],
        *,
        output: Output | None = None,
        backoff: Backoff | None = None,
        run_files: RunFiles | None = None,
        poll_interval: float = 0.1,
        on_started: Callable[[Supervisor], None] | None = None,
    ) -> None:
        names = [c.name for c in components]
        if len(set(names)) != len(names):
            raise ValueError(f"component names must be unique: {names}")
        self._slots = [_Slot(c) for c in sorted(components, key=lambda c: c.stage)]  # stable within a stage
        self.output = output or Output(width=max([8, *(len(n) for n in names)]))
        self.backoff = backoff or Backoff()
        self.run_files = run_files
        self.poll_interval = poll_interval
        self.on_started = on_started
        self._stop = threading.Event()
        self._all_ready = False
        self._stopped_by = ""

    # -- public API ---------------------------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, supervise until asked to stop, stop everything. Returns a process exit code."""
        previous = self._install_signal_handlers()
        try:
            try:
                self.start()
            except StartupFailed as exc:
                self.log(f"start-up failed: {exc}")
                self.stop()
                self._update(status="failed", error=str(exc))
                if self.run_files:
                    self.run_files.release(keep_state=True)
                return 1
            if not self._stop.is_set() and self.on_started is not None:
                self.on_started(self)
            while not self._stop.wait(self.poll_interval):
                self.poll()
            self.log(f"received {self._stopped_by}: stopping" if self._stopped_by else "stop requested")
            self.stop()
            if self.run_files:
                self.run_files.release()
            return 0
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def request_stop(self) -> None:
        self._stop.set()

    def log(self, text: str) -> None:
        self.output.line("devstack", text)

    @property
    def components(self) -> list[Component]:
        return [s.component for s in self._slots]

    def pids(self) -> dict[str, int]:
        return {s.component.name: s.child.pid for s in self._slots if s.child is not None}

    # -- start, supervise, stop -------------------------------------------------------------------------

    def start(self) -> None:
        self._update(status="starting")
        for stage in sorted({s.component.stage for s in self._slots}):
            slots = [s for s in self._slots if s.component.stage == stage]
            for slot in slots:
                if self._stop.is_set():
                    return
                try:
                    self._spawn(slot)
                except OSError as exc:
                    raise StartupFailed(f"could not start {slot.component.name}: {exc}") from exc
            for slot in slots:
                if slot.component.wait_until_ready:
                    self._wait_ready(slot)

    def poll(self) -> None:
        """One pass of supervision: notice exits, schedule and perform restarts, notice readiness."""
        now = time.monotonic()
        for slot in self._slots:
            if slot.child is not None and (code := slot.child.exit_code()) is not None:
                self._on_exit(slot, code, now)
            elif slot.child is None and slot.restart_at is not None and now >= slot.restart_at:
                slot.restart_at = None
                try:
                    self._spawn(slot)
                    self.log(f"{slot.component.name} restarted (pid {slot.child.pid if slot.child else '?'})")
                except OSError as exc:
                    self._on_exit(slot, None, now, reason=str(exc))
        if not self._all_ready:
            self._check_ready()

    def stop(self) -> None:
        """Stop stage by stage, highest first; within a stage, signal all, then wait for each."""
        self._stop.set()
        self._update(status="stopping")
        for stage in sorted({s.component.stage for s in self._slots}, reverse=True):
            running = [s for s in self._slots if s.component.stage == stage and s.child is not None]
            if not running:
                continue
            self.log(f"stopping {', '.join(s.component.name for s in running)}")
            deadlines = {}
            for slot in running:
                assert slot.child is not None
                slot.child.begin_stop()
                deadlines[slot.component.name] = time.monotonic() + slot.component.stop_timeout
            for slot in running:
                assert slot.child is not None
                slot.child.finish_stop(deadlines[slot.component.name])
                slot.child = None
        self.log("all stopped")

    # -- internals ----------------------------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        slot.child = Child(slot.component, self.output)
        slot.ready = False
        if self.run_files:
            c = slot.component
            self.run_files.record_child(c.name, slot.child.pid, c.stop_signal, c.signal_group)

    def _on_exit(self, slot: _Slot, code: int | None, now: float, reason: str = "") -> None:
        ran = 0.0
        if slot.child is not None:
            ran = now - slot.child.started_at
            slot.child.reap_group()
            slot.child = None
        if ran >= self.backoff.reset_after:
            slot.failures = 0
        slot.failures += 1
        delay = self.backoff.delay(slot.failures)
        slot.restart_at = now + delay
        what = reason or f"exited with code {code} after {ran:.1f}s"
        self.log(f"{slot.component.name} {what}; restarting in {delay:.2f}s (failure {slot.failures} in a row)")

    def _wait_ready(self, slot: _Slot) -> None:
        c = slot.component
        deadline = time.monotonic() + c.ready_timeout
        while not self._stop.is_set():
            assert slot.child is not None
            if (code := slot.child.exit_code()) is not None:
                raise StartupFailed(f"{c.name} exited with code {code} before it was ready (its output is above)")
            if c.is_ready():
                slot.ready = True
                self.log(f"{c.name} ready" + (f" on {c.endpoint}" if c.endpoint else ""))
                return
            if time.monotonic() > deadline:
                raise StartupFailed(f"{c.name} was not ready within {c.ready_timeout:.0f}s")
            self._stop.wait(0.05)

    def _check_ready(self) -> None:
        for slot in self._slots:
            if not slot.ready and slot.child is not None and slot.component.is_ready():
                slot.ready = True
                if slot.component.endpoint is not None and not slot.component.wait_until_ready:
                    self.log(f"{slot.component.name} listening on {slot.component.endpoint}")
        if all(s.ready for s in self._slots):
            self._all_ready = True
            self._update(status="ready")
            self.log("all components ready")

    def _update(self, **fields: object) -> None:
        if self.run_files:
            self.run_files.update(**fields)

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}  # embedded in a test or another program: the caller uses request_stop()

        def handle(signum: int, frame: FrameType | None) -> None:
            # Only set flags here: logging could deadlock on the output lock the main thread may hold.
            self._stopped_by = self._stopped_by or signal.Signals(signum).name
            self._stop.set()

        previous: dict[int, Any] = {}
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, handle)
        return previous
