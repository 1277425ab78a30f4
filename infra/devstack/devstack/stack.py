"""The embedded stack `make run` starts, as data: PostgreSQL, Tansu, the SMTP sink, then the services.

Ports have fixed defaults (so bookmarks and curl commands keep working) and each can be moved with
`DEVSTACK_<NAME>_PORT`. `DATABASE_URL`, `KAFKA_BOOTSTRAP_SERVERS` or `SMTP_HOST`/`SMTP_PORT` in the environment
mean "use that server, don't start one". `DEVSTACK_VAR_DIR` moves the state folder (default: `<repo>/var`).
`DEVSTACK_SERVICES` (comma-separated names; empty for none) starts only some services, e.g. to run one of them
in a debugger against the rest.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devstack import broker, postgres
from devstack.components import Component, Endpoint

DEFAULT_PORTS: dict[str, int] = {
    "postgres": 55432, "broker": 59092, "smtp": 2525,
    "intake": 8001, "triage": 8002, "notify": 8003, "audit": 8004, "web": 8005,
}
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ServiceSpec:
    """A service of this repo, run as `python -m <module>`; it listens on HTTP_PORT."""

    name: str
    smtp: bool = False  # gets SMTP_HOST / SMTP_PORT

    @property
    def module(self) -> str:
        return self.name


# The services `make run` starts, in this order. Adding one is one line (its default port goes in DEFAULT_PORTS).
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("intake"),
    ServiceSpec("triage"),
    ServiceSpec("notify", smtp=True),
    ServiceSpec("audit"),
    ServiceSpec("web", smtp=True),  # sends the sign-in emails itself (services/web/web/mail.py says why)
)
RESERVED: tuple[str, ...] = ()  # ports kept free for services still to come: shown in the table


class StackError(RuntimeError):
    """Something a person must fix before the stack can start (a busy port, an unreachable folder)."""


def repo_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "infra" / "devstack").is_dir():
            return parent
    return Path.cwd()


def var_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("DEVSTACK_VAR_DIR") or repo_root() / "var").resolve()


def port(name: str, env: Mapping[str, str]) -> int:
    key = f"DEVSTACK_{name.upper()}_PORT"
    try:
        return int(env.get(key) or DEFAULT_PORTS[name])
    except ValueError as exc:
        raise StackError(f"{key}={env[key]!r} is not a port number") from exc


def token_secret(var: Path, env: Mapping[str, str]) -> str:
    """TOKEN_SECRET from the environment, else one generated on the first run and kept in var/ (0600)."""
    if env.get("TOKEN_SECRET"):
        return env["TOKEN_SECRET"]
    path = var / "token-secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    os.chmod(path, 0o600)
    return path.read_text().strip()


def selected_services(env: Mapping[str, str]) -> tuple[ServiceSpec, ...]:
    if "DEVSTACK_SERVICES" not in env:
        return SERVICES
    wanted = {n.strip() for n in env["DEVSTACK_SERVICES"].split(",") if n.strip()}
    unknown = wanted - {s.name for s in SERVICES}
    if unknown:
        raise StackError(f"DEVSTACK_SERVICES names unknown services {sorted(unknown)}; known: "
                         f"{[s.name for s in SERVICES]}")
    return tuple(s for s in SERVICES if s.name in wanted)


def port_is_free(number: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is not "busy"
        try:
            s.bind((host, number))
        except OSError:
            return False
    return True


def _who_listens(number: int) -> str:
    try:
        import psutil

        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == number and conn.pid:
                proc = psutil.Process(conn.pid)
                return f" by pid {conn.pid} ({' '.join(proc.cmdline())[:80]})"
    except Exception:  # noqa: S110 - only a hint in an error message
        pass
    return ""


def check_ports_free(wanted: Mapping[str, int]) -> None:
    busy = [
        f"  port {number} ({name}) is already in use{_who_listens(number)}; "
        f"stop that process or set DEVSTACK_{name.upper()}_PORT to another port"
        for name, number in wanted.items() if not port_is_free(number)
    ]
    if busy:
        raise StackError("cannot start the stack:\n" + "\n".join(busy))


def check_reachable_by(user: str | None, folder: Path) -> None:
    """PostgreSQL runs as another OS user when we are root: every folder above its data must let it through."""
    if user is None:
        return
    for parent in [folder, *folder.parents]:
        if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
            raise StackError(
                f"{parent} is not searchable by other users (mode {stat.filemode(parent.stat().st_mode)}), "
                f"so PostgreSQL, running as {user!r}, cannot reach {folder}: chmod o+x it or choose "
                "another DEVSTACK_VAR_DIR"
            )


@dataclass
class Stack:
    """The components to supervise, the environment every service gets, and what the table shows."""

    components: list[Component]
    service_env: dict[str, str]
    var_dir: Path
    mail_dir: Path | None
    notes: list[str]


def _postgres(var: Path, number: int, notes: list[str]) -> tuple[Component, str]:
    layout = postgres.PostgresLayout(var / "postgres")
    user = postgres.run_as_user()
    check_reachable_by(user, layout.root)
    password = postgres.prepare(layout)
    argv = postgres.command(layout, number, durable=True)
    pg_isready = str(Path(argv[0]).with_name("pg_isready"))

    def ready() -> bool:
        probe = [pg_isready, "-q", "-h", LOOPBACK, "-p", str(number), "-t", "1"]
        return subprocess.run(probe, check=False).returncode == 0

    notes.append(f"PostgreSQL superuser password: {layout.password_file}")
    component = Component(
        "postgres", tuple(argv), stage=0, user=user, ready=ready, wait_until_ready=True,
        endpoint=Endpoint(LOOPBACK, number, f"postgresql://postgres@{LOOPBACK}:{number}/postgres"),
        stop_signal=signal.SIGINT,  # fast shutdown (roll back clients, checkpoint, exit)
        signal_group=False, stop_timeout=30.0,
    )
    return component, postgres.dsn(number, password)


@dataclass
class _Servers:
    """Where the services find PostgreSQL, Kafka and SMTP: started by us, or given in the environment."""

    database_url: str
    kafka: str
    smtp_host: str
    smtp_port: str


def _own_ports(env: Mapping[str, str], services: tuple[ServiceSpec, ...]) -> dict[str, int]:
    """The ports of everything we will start ourselves."""
    names = [
        *([] if env.get("DATABASE_URL") else ["postgres"]),
        *([] if env.get("KAFKA_BOOTSTRAP_SERVERS") else ["broker"]),
        *([] if env.get("SMTP_HOST") else ["smtp"]),
        *(s.name for s in services),
    ]
    return {name: port(name, env) for name in names}


def _infrastructure(
    env: Mapping[str, str], var: Path, ports: Mapping[str, int], notes: list[str]
) -> tuple[list[Component], _Servers, Path | None]:
    components: list[Component] = []
    servers = _Servers(env.get("DATABASE_URL", ""), env.get("KAFKA_BOOTSTRAP_SERVERS", ""),
                       env.get("SMTP_HOST", ""), env.get("SMTP_PORT", "25"))
    if "postgres" in ports:
        component, servers.database_url = _postgres(var, ports["postgres"], notes)
        components.append(component)
    else:
        notes.append("PostgreSQL: using DATABASE_URL from the environment")
    if "broker" in ports:
        broker.check_version()
        servers.kafka = f"{LOOPBACK}:{ports['broker']}"
        components.append(Component(
            "broker", tuple(broker.command(ports["broker"])), stage=1, wait_until_ready=True,
            endpoint=Endpoint(LOOPBACK, ports["broker"], servers.kafka),
        ))
    else:
        notes.append("Kafka: using KAFKA_BOOTSTRAP_SERVERS from the environment")
    mail_dir: Path | None = None
    if "smtp" in ports:
        mail_dir = var / "mail"
        servers.smtp_host, servers.smtp_port = LOOPBACK, str(ports["smtp"])
        components.append(Component(
            "smtp", (sys.executable, "-m", "devstack.smtp_sink", "--host", LOOPBACK, "--port",
                     servers.smtp_port, "--dir", str(mail_dir)),
            stage=1, wait_until_ready=True, endpoint=Endpoint(LOOPBACK, ports["smtp"]),
            note=f"mail files: {mail_dir}",
        ))
    else:
        notes.append("SMTP: using SMTP_HOST/SMTP_PORT from the environment")
    return components, servers, mail_dir


def _services(
    services: tuple[ServiceSpec, ...], service_env: Mapping[str, str], servers: _Servers,
    ports: Mapping[str, int],
) -> list[Component]:
    components = []
    for spec in services:
        number = ports[spec.name]
        child_env = {**service_env, "SERVICE_NAME": spec.name, "HTTP_PORT": str(number)}
        if spec.smtp:
            child_env |= {"SMTP_HOST": servers.smtp_host, "SMTP_PORT": servers.smtp_port}
        # Migrated with the administrative URL, then run as the service's own role alone (common.migrate).
        components.append(Component(
            spec.name, (sys.executable, "-m", "common.migrate", "--exec", spec.module), stage=2, env=child_env,
            cwd=repo_root(),
            endpoint=Endpoint(LOOPBACK, number, f"http://{LOOPBACK}:{number}"),
        ))
    return components


def build(env: Mapping[str, str] | None = None) -> Stack:
    """Prepare var/ and PostgreSQL's data, and describe every component. Starts nothing."""
    env = dict(os.environ if env is None else env)
    var = var_dir(env)
    var.mkdir(parents=True, exist_ok=True)
    services = selected_services(env)
    ports = _own_ports(env, services)
    check_ports_free(ports)
    notes: list[str] = []
    components, servers, mail_dir = _infrastructure(env, var, ports, notes)
    service_env = {
        "DATABASE_URL": servers.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": servers.kafka,
        "TOKEN_SECRET": token_secret(var, env),
        # Where people open links (acknowledgement and sign-in pages): the web app.
        "PUBLIC_BASE_URL": env.get("PUBLIC_BASE_URL") or f"http://{LOOPBACK}:{port('web', env)}",
        "INTAKE_URL": f"http://{LOOPBACK}:{port('intake', env)}",
        "AUDIT_URL": f"http://{LOOPBACK}:{port('audit', env)}",
        "LOG_FORMAT": env.get("LOG_FORMAT", "console"),
        "HTTP_HOST": LOOPBACK,
        # audit's signing key and its checkpoints kept outside the database belong to this stack's var dir:
        # another stack's checkpoint would not verify against this stack's log
        "SIGNING_KEY_FILE": env.get("SIGNING_KEY_FILE") or str(var / "audit" / "signing-key.pem"),
        "CHECKPOINT_DIR": env.get("CHECKPOINT_DIR") or str(var / "audit" / "checkpoints"),
    }
    components += _services(services, service_env, servers, ports)
    notes += [f"{name}: port {port(name, env)} reserved" for name in RESERVED]
    return Stack(components, service_env, var, mail_dir, notes)
