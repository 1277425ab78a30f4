"""docker-compose.yml is valid Compose and wires the services (and the web app) to Kafka and PostgreSQL.

The schema is the Compose specification's own JSON schema as vendored by check-jsonschema (its builtin
`vendor.compose-spec`), so the test needs neither a Docker engine nor the network.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
SERVICES = ("intake", "triage", "notify", "audit", "web")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())  # resolves anchors and `<<` merges
    return data


def _compose_schema() -> dict[str, Any]:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema: dict[str, Any] = json.loads(schema_file.read_text())
    return schema


def test_the_file_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = _compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))

    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_it_names_kafka_postgres_and_every_service(compose: dict[str, Any]) -> None:
    assert {"kafka", "postgres", *SERVICES} <= set(compose["services"])


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_runs_from_the_monorepo_image_as_its_own_role_once_kafka_and_postgres_are_healthy(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]

    # Migrated with the administrative URL, then run as the service's own role alone.
    assert service["command"] == ["python", "-m", "common.migrate", "--exec", name]
    assert service["build"] == {"context": ".", "dockerfile": "infra/Dockerfile"}
    assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    env = service["environment"]
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["DATABASE_URL"].startswith("postgresql://postgres:") and "@postgres:5432/" in env["DATABASE_URL"]
    assert {"HTTP_PORT", "HTTP_HOST", "TOKEN_SECRET", "PUBLIC_BASE_URL", "LOG_FORMAT"} <= set(env)


def test_kafka_runs_kraft_and_advertises_a_listener_other_containers_can_reach(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    env = kafka["environment"]

    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "ZOOKEEPER" not in " ".join(env)
    assert "INTERNAL://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "healthcheck" in kafka


def test_postgres_has_a_healthcheck_and_no_default_password(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]

    assert postgres["image"].split(":")[0] == "postgres" and postgres["image"].split(":")[1] in {"17", "18"}
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_notify_is_pointed_at_an_smtp_server(compose: dict[str, Any]) -> None:
    env = compose["services"]["notify"]["environment"]

    assert env["SMTP_HOST"] and env["SMTP_PORT"]


def test_the_web_app_reaches_intake_and_audit_and_sends_sign_in_mail(compose: dict[str, Any]) -> None:
    env = compose["services"]["web"]["environment"]

    assert env["INTAKE_URL"] == "http://intake:8000" and env["AUDIT_URL"] == "http://audit:8000"
    assert env["SMTP_HOST"] and env["SMTP_PORT"]
    assert "8005" in env["PUBLIC_BASE_URL"]  # notifications' links open the web app's pages
