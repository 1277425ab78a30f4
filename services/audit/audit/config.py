"""The audit service's settings: the shared service settings, the signing key and checkpoint schedule."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from common.settings import ServiceSettings


class AuditSettings(ServiceSettings):  # type: ignore[misc, unused-ignore]  # (mypy may not see common)
    service_name: str = "audit"
    consumer_gather_ms: int = 500  # the log half a second behind: a tenth of the transactions and fetches
    consumer_fetch_wait_ms: int = 250  # off the path to a person being told: fewer fetches for the broker
    signing_key_file: Path = Field(
        default=Path("var/audit/signing-key.pem"),
        description="Ed25519 private key (PKCS#8 PEM), generated on first start and kept with mode 0600.",
    )
    log_origin: str = Field(
        default="audit.online-safety.local",
        description="The log's name: the signed-note key name and, with '/<school>', each checkpoint's origin.",
    )
    checkpoint_interval_seconds: float = Field(default=60.0, gt=0)
    checkpoint_dir: Path = Field(
        default=Path("var/audit/checkpoints"),
        description="The latest signed checkpoint of each school, kept outside the database (<school>.txt).",
    )
    read_roles_full: frozenset[str] = Field(
        default=frozenset({"dsl", "deputy_dsl", "headteacher"}),
        description="Roles that see pupil-identifying fields.",
    )
    read_roles_redacted: frozenset[str] = Field(
        default=frozenset({"governor", "chair_of_governors", "online_safety_coordinator"}),
        description="Roles that see timelines and aggregates without pupil-identifying fields.",
    )
