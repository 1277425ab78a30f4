"""Issue 3, points 1, 3 and 7: reporting, idempotency, and bad input as problem+json."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx
from intake_support import KEY_A, api_key, read_events, report

from intake.config import IntakeSettings


async def count_incidents(settings: IntakeSettings) -> int:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {settings.schema_name}.incidents"))  # noqa: S608
    finally:
        await conn.close()


async def test_report_is_accepted_with_id_reference_and_status_url_and_published(
    client: httpx.AsyncClient, settings: IntakeSettings
) -> None:
    response = await client.post("/v1/incidents", json=report(), headers=api_key())
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "received"
    assert body["reference"].startswith("OSI-") and len(body["reference"]) == 10
    assert body["status_url"] == f"/v1/incidents/{body['incident_id']}"
    assert response.headers["location"] == body["status_url"]
    assert await count_incidents(settings) == 1

    events = await read_events(settings.kafka_bootstrap_servers, f"{settings.topic_prefix}incidents.reported",
                               lambda es: any(e["subject"] == body["incident_id"] for e in es))
    event = next(e for e in events if e["subject"] == body["incident_id"])
    assert event["type"] == "uk.school.safety.incident.reported.v1"
    assert event["schoolid"] == "school-a"
    assert event["data"]["reference"] == body["reference"]
    assert event["data"]["integration_id"] == "cpoms-a"
    assert event["data"]["report"]["category"] == "inappropriate_access_accidental"


async def test_retried_post_with_idempotency_key_returns_first_answer_and_creates_one_incident(
    client: httpx.AsyncClient, settings: IntakeSettings
) -> None:
    headers = {**api_key(), "Idempotency-Key": "cpoms-report-8812"}
    first = await client.post("/v1/incidents", json=report(), headers=headers)
    second = await client.post("/v1/incidents", json=report(), headers=headers)
    assert first.status_code == second.status_code == 202
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert await count_incidents(settings) == 1


async def test_same_idempotency_key_with_different_body_is_422_not_an_overwrite(
    client: httpx.AsyncClient, settings: IntakeSettings
) -> None:
    headers = {**api_key(), "Idempotency-Key": "cpoms-report-8813"}
    first = await client.post("/v1/incidents", json=report(), headers=headers)
    other = await client.post("/v1/incidents", json=report(where="Library"), headers=headers)
    assert first.status_code == 202
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["type"].endswith("/idempotency-key-reused")
    assert await count_incidents(settings) == 1


async def test_idempotency_keys_are_per_integration(client: httpx.AsyncClient, settings: IntakeSettings) -> None:
    from intake_support import KEY_A_OTHER

    a = await client.post("/v1/incidents", json=report(), headers={**api_key(KEY_A), "Idempotency-Key": "k1"})
    b = await client.post("/v1/incidents", json=report(), headers={**api_key(KEY_A_OTHER), "Idempotency-Key": "k1"})
    assert a.status_code == b.status_code == 202
    assert a.json()["incident_id"] != b.json()["incident_id"]
    assert await count_incidents(settings) == 2


async def test_oversized_body_is_413_problem(client: httpx.AsyncClient, settings: IntakeSettings) -> None:
    body = json.dumps(report(description="x" * 7000, padding=["y" * 1000] * 70)).encode()
    assert len(body) > 64 * 1024
    response = await client.post("/v1/incidents", content=body,
                                 headers={**api_key(), "Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 413
    assert await count_incidents(settings) == 0


async def test_wrong_content_type_is_415_problem(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/incidents", content=json.dumps(report()),
                                 headers={**api_key(), "Content-Type": "text/plain"})
    assert response.status_code == 415
    assert response.headers["content-type"] == "application/problem+json"
    assert "application/json" in response.json()["detail"]


async def test_unknown_category_is_422_naming_the_field(client: httpx.AsyncClient, settings: IntakeSettings) -> None:
    response = await client.post("/v1/incidents", json=report(category="mild_concern"), headers=api_key())
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"].endswith("/validation")
    assert [e["field"] for e in problem["errors"]] == ["category"]
    assert "category" in problem["detail"]
    assert await count_incidents(settings) == 0


async def test_wrongly_typed_and_missing_fields_are_named(client: httpx.AsyncClient) -> None:
    body: dict[str, Any] = report(child_at_immediate_risk="yes")
    del body["risk_area"]
    body["subjects"][0]["kind"] = 7
    response = await client.post("/v1/incidents", json=body, headers=api_key())
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert {"child_at_immediate_risk", "risk_area", "subjects[0].kind"} <= fields


async def test_validation_problems_do_not_echo_pupil_details(client: httpx.AsyncClient) -> None:
    body = report()
    body["subjects"][0]["name"] = "Tilly Example " * 20  # too long
    response = await client.post("/v1/incidents", json=body, headers=api_key())
    assert response.status_code == 422
    assert "Tilly" not in response.text


async def test_malformed_json_is_400_problem(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/incidents", content=b'{"school_id": ',
                                 headers={**api_key(), "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


async def test_future_occurrence_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/incidents", json=report(occurred_at="2999-01-01T00:00:00+00:00"),
                                 headers=api_key())
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "occurred_at"


async def test_nul_characters_are_refused_not_a_server_error(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/incidents", json=report(where="ICT\u0000suite"), headers=api_key())
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "where"


async def test_openapi_documents_the_report_with_examples(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    post = schema["paths"]["/v1/incidents"]["post"]
    content = post["requestBody"]["content"]["application/json"]
    assert content["schema"] == {"$ref": "#/components/schemas/IncidentReport"}
    assert "inappropriate_access" in content["examples"]
    assert {"202", "401", "403", "413", "415", "422"} <= set(post["responses"])
    assert post["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/IncidentAccepted"}
    assert post["security"] == [{"APIKeyHeader": []}]
    assert [(p["name"], p["in"], p["required"]) for p in post["parameters"]] == [("Idempotency-Key", "header", False)]
    assert post["parameters"][0]["schema"]["pattern"] == r"^[\x21-\x7e]+$"
    assert "Category" in schema["components"]["schemas"]


async def test_an_idempotency_key_that_is_not_printable_ascii_is_422_naming_the_header(
    client: httpx.AsyncClient, settings: IntakeSettings
) -> None:
    for bad in ("has space", "x" * 256, ""):
        response = await client.post("/v1/incidents", json=report(), headers={**api_key(), "Idempotency-Key": bad})
        assert response.status_code == 422, bad
        assert response.headers["content-type"] == "application/problem+json"
        assert [e["field"] for e in response.json()["errors"]] == ["header.Idempotency-Key"]
    assert await count_incidents(settings) == 0


async def test_a_report_needs_an_api_key_before_its_body_is_read(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/incidents", content=b"{", headers={"Content-Type": "application/json"})
    assert response.status_code == 401
    assert response.json()["detail"] == "Send an X-API-Key."
