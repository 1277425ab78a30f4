"""The whole stack as `make run` starts it, on free ports in a temporary var dir: for tests, benches and chaos.

`python -m devstack run` runs in a child process of its own session (so a Ctrl-C aimed at the caller does not
reach it, and the caller stops it with SIGTERM as a person would with Ctrl-C). Nothing inherited from the
caller's environment points the stack at other servers (DATABASE_URL and the like are removed).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from devstack.ports import free_port
from devstack.runfiles import read_state, wait_ready
from devstack.stack import SERVICES, repo_root

INHERITED_SERVERS = ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "SMTP_HOST", "SMTP_PORT")


@dataclass
class LaunchedStack:
    """A running `python -m devstack run`: its var dir, ports and state (env, mail dir, children's pids)."""

    var: Path
    ports: dict[str, int]
    process: subprocess.Popen[bytes]
    state: dict[str, Any] = field(default_factory=dict)
    owns_var: bool = True

    @property
    def mail_dir(self) -> Path:
        return Path(self.state["mail_dir"])

    @property
    def admin_dsn(self) -> str:
        dsn: str = self.state["env"]["DATABASE_URL"]
        return dsn

    @property
    def token_secret(self) -> str:
        secret: str = self.state["env"]["TOKEN_SECRET"]
        return secret

    def url(self, component: str) -> str:
        return f"http://127.0.0.1:{self.ports[component]}"

    def children(self) -> dict[str, dict[str, Any]]:
        """Each supervised child's current pid (a restart records the new one), read from the state file."""
        children: dict[str, dict[str, Any]] = read_state(self.var).get("children", {})
        return children

    def stop(self, timeout: float = 90.0, *, remove_var: bool = True) -> int | None:
        """SIGTERM the supervisor (it stops every child in order) and wait; SIGKILL its group if it hangs."""
        code: int | None = None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if remove_var and self.owns_var:
            shutil.rmtree(self.var, ignore_errors=True)
        return code


def launch(
    extra_env: Mapping[str, str] | None = None,
    *,
    var: Path | None = None,
    log: IO[bytes] | None = None,
    ready_timeout: float = 180.0,
) -> LaunchedStack:
    """Start the stack on free ports and wait until every component is ready; the caller stops it."""
    owns_var = var is None
    if var is None:
        var = Path(tempfile.mkdtemp(prefix="ose-stack-"))
    var.mkdir(parents=True, exist_ok=True)
    var.chmod(0o755)  # noqa: S103 - PostgreSQL runs as its own OS user and must reach its data dir
    names = ("postgres", "broker", "smtp", *(s.name for s in SERVICES))
    ports = {name: free_port() for name in names}
    env = {
        **os.environ,
        "DEVSTACK_VAR_DIR": str(var),
        **{f"DEVSTACK_{name.upper()}_PORT": str(number) for name, number in ports.items()},
        **(extra_env or {}),
    }
    for inherited in INHERITED_SERVERS:
        env.pop(inherited, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack", "run"], env=env, cwd=repo_root(), start_new_session=True,
        stdout=log, stderr=subprocess.STDOUT if log is not None else None,
    )
    launched = LaunchedStack(var, ports, process, owns_var=owns_var)
    try:
        launched.state = wait_ready(var, timeout=ready_timeout)
    except BaseException:
        launched.stop()
        raise
    return launched
