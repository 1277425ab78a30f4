"""One running child: started in its own process group, its output prefixed with its name, stopped as a group."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from typing import IO

from devstack.components import Component


class Output:
    """Serialises lines from many children (and the supervisor) onto one stream, each prefixed with its name."""

    def __init__(self, stream: IO[str] | None = None, width: int = 8) -> None:
        self._stream = stream
        self._width = width
        self._lock = threading.Lock()

    def line(self, name: str, text: str) -> None:
        stream = self._stream or sys.stdout
        with self._lock:
            stream.write(f"{name:<{self._width}} | {text.rstrip()}\n")
            stream.flush()

    def pump(self, name: str, pipe: IO[bytes]) -> threading.Thread:
        def run() -> None:
            with pipe:
                for raw in iter(pipe.readline, b""):
                    self.line(name, raw.decode("utf-8", "replace"))

        thread = threading.Thread(target=run, name=f"output-{name}", daemon=True)
        thread.start()
        return thread


def _identity(user: str | None) -> tuple[int | None, int | None, list[int] | None]:
    """(uid, gid, supplementary groups) that drop to `user`, if one is given and we are not already it."""
    if user is None or pwd.getpwuid(os.geteuid()).pw_name == user:
        return None, None, None
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid, []


class Child:
    """A started component. Not thread-safe: the supervisor's loop owns it."""

    def __init__(self, component: Component, output: Output) -> None:
        self.component = component
        self._output = output
        env = {**os.environ, **component.env, "PYTHONUNBUFFERED": "1"}
        uid, gid, groups = _identity(component.user)
        self.popen: subprocess.Popen[bytes] = subprocess.Popen(
            list(component.argv), env=env, cwd=component.cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, user=uid, group=gid, extra_groups=groups,
            start_new_session=True,  # its own session and process group: Ctrl-C reaches us only; we stop it
        )
        self.started_at = time.monotonic()
        assert self.popen.stdout is not None
        self._pump = output.pump(component.name, self.popen.stdout)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exit_code(self) -> int | None:
        return self.popen.poll()

    def signal(self, signum: int, *, group: bool) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(self.pid, signum)
            elif self.popen.poll() is None:
                os.kill(self.pid, signum)

    def begin_stop(self) -> None:
        if self.popen.poll() is None:
            self.signal(self.component.stop_signal, group=self.component.signal_group)

    def finish_stop(self, deadline: float) -> None:
        """Wait for the child until `deadline` (monotonic), then kill its whole group; reap it either way."""
        try:
            self.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._output.line("devstack", f"{self.component.name} did not stop in time: killing its process group")
            self.signal(signal.SIGKILL, group=True)
            self.popen.wait()
        self.reap_group()

    def stop(self) -> None:
        self.begin_stop()
        self.finish_stop(time.monotonic() + self.component.stop_timeout)

    def reap_group(self) -> None:
        """Kill anything the child left behind in its process group (grandchildren), and drain its output."""
        self.signal(signal.SIGKILL, group=True)
        self._pump.join(timeout=2.0)
