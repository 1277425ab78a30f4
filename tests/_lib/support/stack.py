"""Real servers for the tests: testcontainers where a Docker engine answers, else the embedded ones.

The embedded servers are the same that `make run` starts (devstack), started once per test session
in a temporary directory; the broker can be stopped and restarted to test outages.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from devstack import broker, postgres
from devstack.ports import free_port, wait_for_port


def docker_engine_answers() -> bool:
    try:
        import docker  # noqa: PLC0415 - part of testcontainers

        docker.from_env(timeout=2).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means: no engine here
        return False


@dataclass
class EmbeddedStack:
    root: Path
    pg_port: int = field(default_factory=free_port)
    broker_port: int = field(default_factory=free_port)
    _pg: subprocess.Popen[bytes] | None = None
    _broker: subprocess.Popen[bytes] | None = None
    password: str = ""

    @property
    def admin_dsn(self) -> str:
        return postgres.dsn(self.pg_port, self.password)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    def start(self) -> None:
        broker.check_version()
        layout = postgres.PostgresLayout(self.root / "postgres")
        self.password = postgres.prepare(layout)
        self._pg = subprocess.Popen(
            postgres.command(layout, self.pg_port, durable=False),
            user=postgres.run_as_user(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.start_broker()
        wait_for_port("127.0.0.1", self.pg_port, what="PostgreSQL")

    def start_broker(self) -> None:
        if self._broker is not None:
            return
        self._broker = subprocess.Popen(
            broker.command(self.broker_port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port("127.0.0.1", self.broker_port, what="broker")

    def stop_broker(self) -> None:
        if self._broker is not None:
            self._broker.kill()
            self._broker.wait()
            self._broker = None

    def stop(self) -> None:
        self.stop_broker()
        if self._pg is not None:
            self._pg.terminate()
            self._pg.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


def start_embedded() -> EmbeddedStack:
    root = Path(tempfile.mkdtemp(prefix="ose-test-"))
    root.chmod(0o755)  # noqa: S103 - PostgreSQL runs as its own OS user and must reach its data dir
    stack = EmbeddedStack(root)
    stack.start()
    return stack


@dataclass
class ContainerStack:
    """The same interface on testcontainers (Kafka, PostgreSQL), for hosts with a Docker engine.

    A broker "outage" pauses the Kafka container: a restarted container could come back on other ports.
    """

    _pg: object = None
    _kafka: object = None
    admin_dsn: str = ""
    bootstrap: str = ""
    _broker: object = True

    def start(self) -> None:
        from testcontainers.kafka import KafkaContainer  # noqa: PLC0415 - only with a Docker engine
        from testcontainers.postgres import PostgresContainer  # noqa: PLC0415

        pg = PostgresContainer("postgres:17", driver=None)
        pg.start()
        kafka = KafkaContainer().with_kraft()
        kafka.start()
        self._pg, self._kafka = pg, kafka
        self.admin_dsn = pg.get_connection_url()
        self.bootstrap = kafka.get_bootstrap_server()

    def stop_broker(self) -> None:
        self._kafka.get_wrapped_container().pause()  # type: ignore[attr-defined]
        self._broker = None

    def start_broker(self) -> None:
        if self._broker is None:
            self._kafka.get_wrapped_container().unpause()  # type: ignore[attr-defined]
            self._broker = True

    def stop(self) -> None:
        for container in (self._kafka, self._pg):
            container.stop()  # type: ignore[attr-defined]


def start_stack() -> EmbeddedStack | ContainerStack:
    """testcontainers where a Docker engine answers, otherwise the embedded servers."""
    if docker_engine_answers():
        containers = ContainerStack()
        containers.start()
        return containers
    return start_embedded()
