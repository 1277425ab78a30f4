"""Issue 3, point 4: keys per integration bound to schools; 401 and 403 that leak nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from intake_support import KEY_A, KEY_A_OTHER, KEY_B, SECRET, api_key, person, report

from common.tokens import issue_person_token


async def test_missing_key_is_401_problem(shared_client: httpx.AsyncClient) -> None:
    response = await shared_client.post("/v1/incidents", json=report())
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert "www-authenticate" in response.headers


async def test_wrong_key_is_401(shared_client: httpx.AsyncClient) -> None:
    response = await shared_client.post("/v1/incidents", json=report(), headers=api_key("osk_not-a-real-key"))
    assert response.status_code == 401


async def test_missing_key_is_401_even_when_the_body_is_invalid(shared_client: httpx.AsyncClient) -> None:
    response = await shared_client.post("/v1/incidents", json={"category": "nonsense"})
    assert response.status_code == 401


async def test_school_a_key_cannot_report_for_school_b(shared_client: httpx.AsyncClient) -> None:
    response = await shared_client.post("/v1/incidents", json=report(school_id="school-b"), headers=api_key(KEY_A))
    assert response.status_code == 403
    assert response.json()["type"].endswith("/wrong-school")


async def test_school_b_cannot_read_or_act_on_school_a_incident_and_learns_nothing(
    shared_client: httpx.AsyncClient,
) -> None:
    created = await shared_client.post("/v1/incidents", json=report(), headers=api_key(KEY_A))
    incident = created.json()["incident_id"]
    unknown = str(uuid.uuid4())
    for who in (api_key(KEY_B), person("dsl", school="school-b")):
        foreign = await shared_client.get(f"/v1/incidents/{incident}", headers=who)
        missing = await shared_client.get(f"/v1/incidents/{unknown}", headers=who)
        assert foreign.status_code == missing.status_code == 403
        assert {k: v for k, v in foreign.json().items() if k != "instance"} == {
            k: v for k, v in missing.json().items() if k != "instance"
        }
        for path, body in (("acknowledgements", {"by": {"role": "dsl"}}),
                           ("actions", {"action": "ico_notified", "by": {"role": "dsl"}})):
            refused = await shared_client.post(f"/v1/incidents/{incident}/{path}", json=body, headers=who)
            assert refused.status_code == 403


async def test_another_integration_of_the_same_school_cannot_read_the_report(shared_client: httpx.AsyncClient) -> None:
    created = await shared_client.post("/v1/incidents", json=report(), headers=api_key(KEY_A))
    response = await shared_client.get(f"/v1/incidents/{created.json()['incident_id']}", headers=api_key(KEY_A_OTHER))
    assert response.status_code == 403


async def test_tampered_or_expired_person_token_is_401(shared_client: httpx.AsyncClient) -> None:
    incident = str(uuid.uuid4())
    token = person()["Authorization"].removeprefix("Bearer ")
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    expired = issue_person_token(SECRET, person_id="p", role="dsl", school_id="school-a", ttl=timedelta(seconds=1),
                                 clock=lambda: datetime(2020, 1, 1, tzinfo=UTC))
    other_secret = issue_person_token("another-secret-that-is-long-enough-000000", person_id="p", role="dsl",
                                      school_id="school-a", ttl=timedelta(hours=1))
    for bad in (tampered, expired, other_secret, "garbage"):
        response = await shared_client.get(f"/v1/incidents/{incident}", headers={"Authorization": f"Bearer {bad}"})
        assert response.status_code == 401, bad


async def test_people_cannot_post_reports_with_their_token(shared_client: httpx.AsyncClient) -> None:
    response = await shared_client.post("/v1/incidents", json=report(), headers=person())
    assert response.status_code == 401
