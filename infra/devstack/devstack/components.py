"""What the supervisor runs: each child process described as data, and the restart backoff policy."""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devstack.ports import port_is_open


@dataclass(frozen=True)
class Endpoint:
    """Where a component listens; `url` is what the table shows people."""

    host: str
    port: int
    url: str = ""

    def is_open(self) -> bool:
        return port_is_open(self.host, self.port)

    def __str__(self) -> str:
        return self.url or f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Component:
    """One supervised child process.

    Components start stage by stage (lowest first) and stop in the reverse order; a stage's components stop
    together. With `wait_until_ready`, the next stage starts only once this one answers `ready` (infrastructure
    that the services need); services are merely started, and watched until they listen.
    """

    name: str
    argv: tuple[str, ...]
    stage: int = 0
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    user: str | None = None
    endpoint: Endpoint | None = None
    ready: Callable[[], bool] | None = None  # default: the endpoint accepts TCP connections
    wait_until_ready: bool = False
    ready_timeout: float = 60.0
    stop_signal: int = signal.SIGTERM
    signal_group: bool = True  # False: only the leader gets stop_signal (PostgreSQL shuts its backends down)
    stop_timeout: float = 10.0
    note: str = ""  # shown in the table, e.g. where mail files are

    def is_ready(self) -> bool:
        if self.ready is not None:
            return self.ready()
        return self.endpoint.is_open() if self.endpoint is not None else True


@dataclass(frozen=True)
class Backoff:
    """Exponential restart delay: `initial * factor**n`, capped; forgiven after a child stays up `reset_after`."""

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    reset_after: float = 30.0

    def delay(self, consecutive_failures: int) -> float:
        """Delay before the restart that follows the n-th failure in a row (n >= 1)."""
        return float(min(self.maximum, self.initial * self.factor ** max(0, consecutive_failures - 1)))
