"""What `make run` starts, and with which settings; and one real run of the embedded infrastructure."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import smtplib
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest

from devstack import stack
from devstack.ports import free_port, port_is_open
from devstack.runfiles import wait_ready
from devstack.smtp_sink import read_messages

EXTERNAL = {
    "DATABASE_URL": "postgresql://postgres:pw@db.example:5432/postgres",
    "KAFKA_BOOTSTRAP_SERVERS": "kafka.example:9092",
    "SMTP_HOST": "mail.example",
    "SMTP_PORT": "2525",
}


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    ports = {f"DEVSTACK_{name.upper()}_PORT": str(free_port()) for name in stack.DEFAULT_PORTS}
    return {"PATH": os.environ["PATH"], "DEVSTACK_VAR_DIR": str(tmp_path / "var"), **ports, **extra}


def test_with_external_servers_only_the_services_run_and_each_gets_its_settings(tmp_path: Path) -> None:
    env = _env(tmp_path, **EXTERNAL)
    built = stack.build(env)

    assert [c.name for c in built.components] == ["intake", "triage", "notify", "audit", "web"]
    by_name = {c.name: c for c in built.components}
    web_port = env["DEVSTACK_WEB_PORT"]
    for name, component in by_name.items():
        assert component.argv[1:] == ("-m", "common.migrate", "--exec", name)  # then runs as its own role alone
        assert component.env["HTTP_PORT"] == env[f"DEVSTACK_{name.upper()}_PORT"]
        assert component.env["DATABASE_URL"] == EXTERNAL["DATABASE_URL"]
        assert component.env["KAFKA_BOOTSTRAP_SERVERS"] == EXTERNAL["KAFKA_BOOTSTRAP_SERVERS"]
        assert component.env["LOG_FORMAT"] == "console"
        assert component.env["PUBLIC_BASE_URL"] == f"http://127.0.0.1:{web_port}"
        assert component.env["INTAKE_URL"] == f"http://127.0.0.1:{env['DEVSTACK_INTAKE_PORT']}"
        assert len(component.env["TOKEN_SECRET"]) == 64
    assert by_name["notify"].env["SMTP_HOST"] == "mail.example" and by_name["notify"].env["SMTP_PORT"] == "2525"
    assert "SMTP_HOST" not in by_name["intake"].env
    assert by_name["web"].env["SMTP_HOST"] == "mail.example"
    assert len({c.env["HTTP_PORT"] for c in built.components}) == 5


def test_the_token_secret_is_made_once_and_kept_private(tmp_path: Path) -> None:
    env = _env(tmp_path, **EXTERNAL)
    first = stack.build(env).service_env["TOKEN_SECRET"]
    second = stack.build(env).service_env["TOKEN_SECRET"]

    assert first == second
    assert stat.S_IMODE((tmp_path / "var" / "token-secret").stat().st_mode) == 0o600


def test_a_busy_port_is_named_with_the_variable_that_moves_it(tmp_path: Path) -> None:
    env = _env(tmp_path, **EXTERNAL)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(env["DEVSTACK_TRIAGE_PORT"])))
        taken.listen()
        with pytest.raises(stack.StackError, match=r"port \d+ \(triage\) is already in use.*DEVSTACK_TRIAGE_PORT"):
            stack.build(env)


def test_devstack_services_chooses_which_services_start(tmp_path: Path) -> None:
    assert [c.name for c in stack.build(_env(tmp_path, DEVSTACK_SERVICES="notify", **EXTERNAL)).components] == [
        "notify"
    ]
    with pytest.raises(stack.StackError, match="unknown services"):
        stack.build(_env(tmp_path, DEVSTACK_SERVICES="intake,nope", **EXTERNAL))


@pytest.fixture
def world_searchable_dir() -> Iterator[Path]:
    # PostgreSQL runs as another OS user when we are root: pytest's own tmp_path (0700) is out of its reach.
    path = Path(tempfile.mkdtemp(prefix="devstack-run-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_make_run_starts_durable_postgres_the_broker_and_the_mail_sink_and_stops_them_all(
    world_searchable_dir: Path,
) -> None:
    env = {**{k: v for k, v in os.environ.items() if k not in EXTERNAL}, **_env(world_searchable_dir)}
    env["DEVSTACK_SERVICES"] = ""  # the services are exercised by the end-to-end tests
    var = world_searchable_dir / "var"
    proc = subprocess.Popen([sys.executable, "-m", "devstack", "run"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        state = wait_ready(var, timeout=60)
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        settings = state["env"]

        assert asyncio.run(_show(settings["DATABASE_URL"], "fsync")) == "on"
        host, port = settings["KAFKA_BOOTSTRAP_SERVERS"].split(":")
        assert port_is_open(host, int(port))
        with smtplib.SMTP("127.0.0.1", int(env["DEVSTACK_SMTP_PORT"]), timeout=5) as smtp:
            smtp.sendmail("a@school.example", ["dsl@school.example"], b"Subject: hi\r\n\r\nbody\r\n")
        assert [m["Subject"] for m in read_messages(state["mail_dir"])] == ["hi"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)

    assert proc.returncode == 0, out
    assert "component" in out and "mail files:" in out  # the table
    assert out.index("stopping broker, smtp") < out.index("stopping postgres")
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in family)
    assert not (var / "devstack.pid").exists()
    assert not (var / "postgres" / "data" / "postmaster.pid").exists()  # a clean shutdown


async def _show(dsn: str, setting: str) -> str:
    connection = await asyncpg.connect(dsn)
    try:
        value: str = await connection.fetchval(f"SHOW {setting}")
        return value
    finally:
        await connection.close()


def test_a_data_folder_postgres_cannot_reach_is_refused_with_the_reason(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)

    with pytest.raises(stack.StackError, match="not searchable by other users"):
        stack.check_reachable_by("embedded_postgres", private / "postgres")
    stack.check_reachable_by(None, private / "postgres")  # not root: PostgreSQL runs as us
