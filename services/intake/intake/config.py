"""Intake's settings: the shared service settings, the integrations' hashed API keys, and limits."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from common.roles import normalise_role
from common.settings import ServiceSettings


class IntegrationKey(BaseModel):
    """One integration's API key, as stored: only its SHA-256, and the schools it may report for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    integration_id: str = Field(min_length=1, max_length=64)
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the API key")
    schools: frozenset[str] = Field(min_length=1)


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def load_integrations_file(path: Path) -> list[IntegrationKey]:
    """A JSON or YAML list of {integration_id, key_sha256, schools}."""
    text = path.read_text()
    raw: Any = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if isinstance(raw, dict):
        raw = raw.get("integrations", [])
    return [IntegrationKey.model_validate(item) for item in raw or []]


class IntakeSettings(ServiceSettings):  # type: ignore[misc,unused-ignore]  # mypy without libs/common on its path
    service_name: str = "intake"
    consumer_gather_ms: int = 250  # the status projection a quarter of a second behind: fewer, larger batches
    consumer_fetch_wait_ms: int = 100  # the status projection: a tenth of a second behind is soon enough
    integrations: list[IntegrationKey] = Field(
        default_factory=list,
        validation_alias=AliasChoices("intake_integrations", "integrations"),
        description="INTAKE_INTEGRATIONS: JSON list of {integration_id, key_sha256, schools}.",
    )
    integrations_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("intake_integrations_file", "integrations_file"),
        description="INTAKE_INTEGRATIONS_FILE: a JSON or YAML file of the same list (added to the above).",
    )
    max_body_bytes: int = Field(
        default=64 * 1024, validation_alias=AliasChoices("intake_max_body_bytes", "max_body_bytes"), gt=0
    )
    write_batch_max: int = Field(
        default=256, gt=0, validation_alias=AliasChoices("intake_write_batch_max", "write_batch_max"),
        description="INTAKE_WRITE_BATCH_MAX: most reports written in one group commit.",
    )
    write_batches_in_flight: int = Field(
        default=2, gt=0, validation_alias=AliasChoices("intake_write_batches_in_flight", "write_batches_in_flight"),
        description="INTAKE_WRITE_BATCHES_IN_FLIGHT: group commits written at once (each holds a pooled connection).",
    )
    pupil_detail_roles: frozenset[str] = Field(
        default=frozenset({"dsl", "designated_safeguarding_lead", "deputy_dsl", "headteacher"}),
        validation_alias=AliasChoices("intake_pupil_detail_roles", "pupil_detail_roles"),
        description="People's roles that may see pupil-identifying fields and the description.",
    )

    @field_validator("pupil_detail_roles")
    @classmethod
    def _normalise_roles(cls, roles: frozenset[str]) -> frozenset[str]:
        return frozenset(normalise_role(r) for r in roles)

    @model_validator(mode="after")
    def _check_keys(self) -> IntakeSettings:
        if self.integrations_file is not None:
            self.integrations = [*self.integrations, *load_integrations_file(self.integrations_file)]
        ids = [i.integration_id for i in self.integrations]
        hashes = [i.key_sha256 for i in self.integrations]
        if len(set(hashes)) != len(hashes):
            raise ValueError("two integrations share one API key hash")
        if len(set(ids)) != len(ids):
            raise ValueError("an integration id is listed twice")
        return self
