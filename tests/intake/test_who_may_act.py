"""Who may acknowledge an incident and record its actions: the people its escalation chain tells (DESIGN.md's
users). A governor reads the log but does not stop an escalation; a headteacher who is the subject of an allegation
is not in its chain, the chair of governors is. Intake learns the chain from `incidents.triaged`, through the
broker, as in a running system; until then the credentials alone decide (and triage applies the same rule)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from intake_support import ack_link, api_key, person, reported, triaged

from intake.config import IntakeSettings

ILLEGAL_CHAIN = [["headteacher", "dsl"], ["deputy_dsl"], ["chair_of_governors"]]
ABOUT_THE_HEAD = [["chair_of_governors"]]  # the headteacher stands aside: triage froze the chain without them


async def _status(client: httpx.AsyncClient, incident: str) -> dict[str, Any]:
    response = await client.get(f"/v1/incidents/{incident}", headers=api_key())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _refused(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["type"].endswith("/not-in-escalation-chain")
    return problem


async def test_a_governor_may_not_acknowledge_or_close_an_incident(
    settings: IntakeSettings, client: httpx.AsyncClient
) -> None:
    incident = await reported(client)
    await triaged(settings, client, incident, ILLEGAL_CHAIN)

    problem = _refused(await client.post(f"/v1/incidents/{incident}/acknowledgements",
                                         headers=person("governor", person_id="g-1")))
    assert "governor" in problem["detail"]
    assert "dsl" not in problem["detail"] and "chair" not in problem["detail"]  # people are not told the chain
    _refused(await client.post(f"/v1/incidents/{incident}/actions", headers=person("governor", person_id="g-1"),
                               json={"action": "incident_closed", "outcome": "no further action"}))
    status = await _status(client, incident)
    assert (status["status"], status["acknowledgements"], status["actions"]) == ("triaged", [], [])

    # Someone the chain tells, by token or by the link in their notice, may.
    response = await client.post(f"/v1/incidents/{incident}/acknowledgements", headers=person("Deputy DSL"))
    assert response.status_code == 201, response.text
    link = ack_link(incident, role="headteacher", notification_id=str(uuid.uuid4()))
    response = await client.post(f"/v1/incidents/{incident}/acknowledgements",
                                 headers={"Authorization": f"Bearer {link}"})
    assert response.status_code == 201, response.text
    response = await client.post(f"/v1/incidents/{incident}/actions", headers=person("dsl"),
                                 json={"action": "incident_closed", "outcome": "referred; police took the device"})
    assert response.status_code == 201, response.text
    assert (await _status(client, incident))["status"] == "closed"


async def test_a_headteacher_who_is_the_subject_may_not_acknowledge_the_allegation(
    settings: IntakeSettings, client: httpx.AsyncClient
) -> None:
    incident = await reported(client)
    await triaged(settings, client, incident, ABOUT_THE_HEAD)

    _refused(await client.post(f"/v1/incidents/{incident}/acknowledgements", headers=person("headteacher")))
    _refused(await client.post(f"/v1/incidents/{incident}/actions", headers=person("headteacher"),
                               json={"action": "referral_made", "agency": "lado", "reference_number": "L-1"}))
    assert (await _status(client, incident))["status"] == "triaged"
    response = await client.post(f"/v1/incidents/{incident}/acknowledgements",
                                 headers=person("chair_of_governors", person_id="c-1"))
    assert response.status_code == 201, response.text


async def test_an_integration_acting_for_someone_outside_the_chain_is_told_which_roles_may(
    settings: IntakeSettings, client: httpx.AsyncClient
) -> None:
    incident = await reported(client)
    await triaged(settings, client, incident, ABOUT_THE_HEAD)

    problem = _refused(await client.post(f"/v1/incidents/{incident}/acknowledgements", headers=api_key(),
                                         json={"by": {"role": "Headteacher", "name": "A. Head"}}))
    assert problem["errors"][0]["field"] == "by.role"
    assert "chair_of_governors" in problem["errors"][0]["reason"]
    # The role as the integration's users write it: case and spacing do not matter.
    response = await client.post(f"/v1/incidents/{incident}/acknowledgements", headers=api_key(),
                                 json={"by": {"role": "Chair of Governors"}})
    assert response.status_code == 201, response.text


async def test_before_triage_has_decided_the_chain_the_credentials_decide(client: httpx.AsyncClient) -> None:
    incident = await reported(client)
    response = await client.post(f"/v1/incidents/{incident}/acknowledgements", headers=person("dsl"))
    assert response.status_code == 201, response.text


async def test_what_someone_outside_the_chain_did_before_it_was_known_stops_counting_once_it_is(
    settings: IntakeSettings, client: httpx.AsyncClient
) -> None:
    """Triage ignores it (it stops no escalation), so the status must not say acknowledged or closed either."""
    incident = await reported(client)
    acked = await client.post(f"/v1/incidents/{incident}/acknowledgements", headers=api_key(),
                              json={"by": {"role": "Governor"}})
    closed = await client.post(f"/v1/incidents/{incident}/actions", headers=api_key(), json={
        "action": "incident_closed", "outcome": "nothing to see", "by": {"role": "Governor"}})
    assert (acked.status_code, closed.status_code) == (201, 201)
    assert (await _status(client, incident))["status"] == "closed"  # the credentials alone decided

    await triaged(settings, client, incident, ILLEGAL_CHAIN)
    for _ in range(300):
        status = await _status(client, incident)
        if status["status"] != "closed":
            break
        await asyncio.sleep(0.05)
    assert (status["status"], status["closed_at"]) == ("triaged", None)
    assert [a["role"] for a in status["acknowledgements"]] == ["Governor"]  # recorded, as it was

    # From now on only the chain counts: the DSL's acknowledgement moves it on.
    response = await client.post(f"/v1/incidents/{incident}/acknowledgements", headers=person("dsl"))
    assert response.status_code == 201, response.text
    assert (await _status(client, incident))["status"] == "acknowledged"
