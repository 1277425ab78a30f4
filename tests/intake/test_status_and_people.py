"""Issue 3, points 5 and 6: status without pupil detail for roles that do not need it; acknowledgements by
person token and by one-time link; actions recorded; and the status projection fed by other services."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from intake_support import ack_link, api_key, person, read_events, reported

from common.events import new_event
from common.kafka import Publisher
from common.topics import EventType, TopicNames
from intake.config import IntakeSettings


async def test_status_for_a_non_dsl_role_has_no_pupil_identifying_fields(shared_client: httpx.AsyncClient) -> None:
    incident = await reported(shared_client)
    for role in ("online-safety coordinator", "governor", "IT technician"):
        response = await shared_client.get(f"/v1/incidents/{incident}", headers=person(role))
        assert response.status_code == 200
        view = response.json()
        assert view["status"] == "received"
        assert view["pupil_details_included"] is False
        subject = view["report"]["subjects"][0]
        assert subject["kind"] == "pupil" and subject["year_group"] == "Year 6"
        assert not {"identifier", "name", "date_of_birth"} & set(subject)
        assert "description" not in view["report"]
        assert "Tilly" not in response.text and "UPN-A123" not in response.text


async def test_status_for_a_non_dsl_role_has_no_free_text_of_the_actions(shared_client: httpx.AsyncClient) -> None:
    """The reason parents were not informed and the outcome on closing are free text that can name a child."""
    incident = await reported(shared_client)
    for action in ({"action": "parents_not_informed", "reason": "Tilly's father is the alleged perpetrator"},
                   {"action": "referral_made", "agency": "police", "reference_number": "CR-2026-4471"},
                   {"action": "device_secured", "isolated_from_network": True}):
        response = await shared_client.post(f"/v1/incidents/{incident}/actions", json=action, headers=person("dsl"))
        assert response.status_code == 201, response.text
    seen = (await shared_client.get(f"/v1/incidents/{incident}", headers=person("governor"))).json()
    assert [a["details"] for a in seen["actions"]] == [{}, {"agency": "police"}, {"isolated_from_network": True}]
    full = (await shared_client.get(f"/v1/incidents/{incident}", headers=person("dsl"))).json()
    assert full["actions"][0]["details"]["reason"] == "Tilly's father is the alleged perpetrator"
    assert full["actions"][1]["details"]["reference_number"] == "CR-2026-4471"


@pytest.mark.parametrize("at", ["0001-01-01T00:00:00+14:00", "1999-12-31T23:59:00Z", "2999-01-01T00:00:00Z"])
async def test_an_action_dated_outside_2000_to_now_is_refused_and_not_recorded(
    shared_client: httpx.AsyncClient, at: str
) -> None:
    incident = await reported(shared_client)
    response = await shared_client.post(f"/v1/incidents/{incident}/actions", headers=person("dsl"),
                                        json={"action": "ico_notified", "at": at})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "at"
    assert (await shared_client.get(f"/v1/incidents/{incident}", headers=person("dsl"))).json()["actions"] == []


async def test_status_for_dsl_headteacher_and_reporting_integration_includes_pupil_details(
    shared_client: httpx.AsyncClient,
) -> None:
    incident = await reported(shared_client)
    for who in (person("DSL"), person("deputy DSL"), person("headteacher"), api_key()):
        view = (await shared_client.get(f"/v1/incidents/{incident}", headers=who)).json()
        assert view["pupil_details_included"] is True
        assert view["report"]["subjects"][0]["name"] == "Tilly Example"


async def test_acknowledgement_by_person_token_records_who_and_publishes(
    client: httpx.AsyncClient, settings: IntakeSettings
) -> None:
    incident = await reported(client)
    response = await client.post(f"/v1/incidents/{incident}/acknowledgements", headers=person("dsl", person_id="p-7"))
    assert response.status_code == 201, response.text
    assert response.json()["role"] == "dsl" and response.json()["via"] == "token"
    view = (await client.get(f"/v1/incidents/{incident}", headers=person())).json()
    assert view["status"] == "acknowledged"
    assert [a["role"] for a in view["acknowledgements"]] == ["dsl"]

    events = await read_events(settings.kafka_bootstrap_servers, f"{settings.topic_prefix}incidents.acknowledged",
                               lambda es: any(e["subject"] == incident for e in es))
    data = next(e for e in events if e["subject"] == incident)["data"]
    assert data["by"]["person_id"] == "p-7" and data["via"] == "token"


async def test_one_time_link_acknowledges_once_and_is_refused_the_second_time(shared_client: httpx.AsyncClient) -> None:
    incident = await reported(shared_client)
    link = {"Authorization": f"Bearer {ack_link(incident, role='headteacher', notification_id='n-42')}"}
    first = await shared_client.post(f"/v1/incidents/{incident}/acknowledgements", json={"by": {"role": "x",
                                     "name": "R. Head"}}, headers=link)
    assert first.status_code == 201, first.text
    assert first.json()["via"] == "link"
    assert first.json()["role"] == "headteacher"  # the link decides the role, not the body
    again = await shared_client.post(f"/v1/incidents/{incident}/acknowledgements", headers=link)
    assert again.status_code == 409
    assert again.json()["type"].endswith("/ack-link-used")


async def test_a_link_acknowledges_only_its_own_incident_and_does_nothing_else(
    shared_client: httpx.AsyncClient,
) -> None:
    incident = await reported(shared_client)
    other = await reported(shared_client)
    link = {"Authorization": f"Bearer {ack_link(incident)}"}
    assert (await shared_client.post(f"/v1/incidents/{other}/acknowledgements", headers=link)).status_code == 403
    assert (await shared_client.get(f"/v1/incidents/{incident}", headers=link)).status_code == 401
    action = await shared_client.post(f"/v1/incidents/{incident}/actions", json={"action": "ico_notified"},
                                      headers=link)
    assert action.status_code == 401
    # Refused uses did not spend it.
    assert (await shared_client.post(f"/v1/incidents/{incident}/acknowledgements", headers=link)).status_code == 201


async def test_integration_acknowledges_for_a_named_member_of_staff(shared_client: httpx.AsyncClient) -> None:
    incident = await reported(shared_client)
    nameless = await shared_client.post(f"/v1/incidents/{incident}/acknowledgements", headers=api_key())
    assert nameless.status_code == 422 and nameless.json()["errors"][0]["field"] == "by"
    named = await shared_client.post(f"/v1/incidents/{incident}/acknowledgements",
                                     json={"by": {"role": "dsl", "name": "A. Patel"}}, headers=api_key())
    assert named.status_code == 201 and named.json()["via"] == "integration"


async def test_actions_are_recorded_published_and_close_the_incident(
    client: httpx.AsyncClient, settings: IntakeSettings
) -> None:
    incident = await reported(client)
    actions: list[dict[str, Any]] = [
        {"action": "referral_made", "agency": "ceop", "reference_number": "CEOP-7781"},
        {"action": "device_secured", "isolated_from_network": True},
        {"action": "parents_not_informed", "reason": "Social care advised it would put the child at risk."},
        {"action": "ico_notified"},
    ]
    for body in actions:
        response = await client.post(f"/v1/incidents/{incident}/actions", json=body, headers=person("dsl"))
        assert response.status_code == 201, response.text
    view = (await client.get(f"/v1/incidents/{incident}", headers=person())).json()
    assert view["status"] == "actions_recorded"
    assert view["actions"][0]["details"] == {"agency": "ceop", "reference_number": "CEOP-7781"}

    closed = await client.post(f"/v1/incidents/{incident}/actions", headers=person("headteacher"),
                               json={"action": "incident_closed", "outcome": "Referred to CEOP; device with police."})
    assert closed.status_code == 201
    view = (await client.get(f"/v1/incidents/{incident}", headers=person())).json()
    assert view["status"] == "closed" and view["closed_at"] is not None

    events = await read_events(settings.kafka_bootstrap_servers, f"{settings.topic_prefix}incidents.actions",
                               lambda es: len([e for e in es if e["subject"] == incident]) >= 5)
    kinds = [e["data"]["action"] for e in events if e["subject"] == incident]
    assert kinds == ["referral_made", "device_secured", "parents_not_informed", "ico_notified", "incident_closed"]
    assert all(e["type"] == "uk.school.safety.incident.action-recorded.v1" for e in events)


async def test_an_action_missing_what_it_needs_is_422_naming_the_field(shared_client: httpx.AsyncClient) -> None:
    incident = await reported(shared_client)
    response = await shared_client.post(f"/v1/incidents/{incident}/actions", json={"action": "referral_made",
                                        "agency": "police"}, headers=person())
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["reference_number"]
    unknown_agency = await shared_client.post(f"/v1/incidents/{incident}/actions", headers=person(), json={
        "action": "referral_made", "agency": "neighbour", "reference_number": "1"})
    assert unknown_agency.status_code == 422 and unknown_agency.json()["errors"][0]["field"] == "agency"


async def _publish(settings: IntakeSettings, *events: Any) -> None:
    topics = TopicNames(settings.topic_prefix)
    publisher = Publisher(settings.kafka_bootstrap_servers, topics.all(), settings.topic_partitions)
    try:
        await publisher.send_batch([(topics.physical(e.topic.value), e.key, e.to_bytes(), []) for e in events])
    finally:
        await publisher.close()


async def _status_becomes(client: httpx.AsyncClient, incident: str, status: str) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for _ in range(150):
        view = (await client.get(f"/v1/incidents/{incident}", headers=person())).json()
        if view["status"] == status:
            return view
        await asyncio.sleep(0.2)
    raise AssertionError(f"status stayed {view.get('status')}, expected {status}")


async def test_status_follows_triage_and_notify_events_and_never_goes_back(
    client: httpx.AsyncClient, settings: IntakeSettings
) -> None:
    incident = await reported(client)
    now = datetime.now(UTC)

    def event(kind: EventType, data: dict[str, Any]) -> Any:
        return new_event(kind, source="test", subject=incident, schoolid="school-a", data=data, clock=lambda: now)

    triaged = event(EventType.INCIDENT_TRIAGED, {
        "incident_id": incident, "reference": "OSI-TEST00", "incident_class": "inappropriate", "urgency": "normal",
        "risk_area": "content", "reasons": [], "reminders": [], "policy_version": "p1", "chain": []})
    await _publish(settings, triaged)
    view = await _status_becomes(client, incident, "triaged")
    assert view["incident_class"] == "inappropriate" and view["urgency"] == "normal"

    notification = str(uuid.uuid4())
    await _publish(settings, event(EventType.NOTIFICATION_REQUESTED, {
        "notification_id": notification, "incident_id": incident, "reference": "OSI-TEST00", "school_id": "school-a",
        "school_name": "School A", "incident_class": "inappropriate", "urgency": "normal", "level": 1,
        "generation": 1, "recipient": {"role": "dsl", "channels": [{"kind": "email", "address": "dsl@a.sch.uk"}]},
        "reminders": [], "reason": "first notice"}))
    view = await _status_becomes(client, incident, "escalated")
    assert view["escalation_level"] == 1

    await _publish(settings, event(EventType.NOTIFICATION_DELIVERED, {
        "notification_id": notification, "incident_id": incident, "recipient_role": "dsl", "channel": "email",
        "provider_id": "m-1", "attempts": 1}))
    for _ in range(100):
        view = (await client.get(f"/v1/incidents/{incident}", headers=person())).json()
        if view["notifications"] and view["notifications"][0]["state"] == "delivered":
            break
        await asyncio.sleep(0.2)
    assert view["notifications"][0]["channel"] == "email"

    await _publish(settings, event(EventType.INCIDENT_ACKNOWLEDGED, {
        "incident_id": incident, "by": {"role": "dsl"}, "at": now.isoformat(), "via": "link"}))
    await _status_becomes(client, incident, "acknowledged")

    # A late triage event (e.g. re-delivered) does not move the status back.
    await _publish(settings, event(EventType.INCIDENT_TRIAGED, triaged.data))
    await asyncio.sleep(1.5)
    view = (await client.get(f"/v1/incidents/{incident}", headers=person())).json()
    assert view["status"] == "acknowledged"
    assert len(view["acknowledgements"]) == 1


async def test_a_retried_action_with_the_same_idempotency_key_is_recorded_once(
    shared_client: httpx.AsyncClient,
) -> None:
    incident, other = await reported(shared_client), await reported(shared_client)
    body = {"action": "referral_made", "agency": "police", "reference_number": "PN-2291"}
    headers = {**person("dsl"), "Idempotency-Key": "desk-form-7f3a"}
    first = await shared_client.post(f"/v1/incidents/{incident}/actions", json=body, headers=headers)
    again = await shared_client.post(f"/v1/incidents/{incident}/actions", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    view = (await shared_client.get(f"/v1/incidents/{incident}", headers=person())).json()
    assert [a["action_id"] for a in view["actions"]] == [first.json()["action_id"]]

    changed = await shared_client.post(f"/v1/incidents/{incident}/actions", headers=headers,
                                       json={**body, "reference_number": "PN-2292"})
    elsewhere = await shared_client.post(f"/v1/incidents/{other}/actions", json=body, headers=headers)
    for refused in (changed, elsewhere):
        assert refused.status_code == 422 and refused.json()["type"].endswith("/idempotency-key-reused")
    assert (await shared_client.get(f"/v1/incidents/{other}", headers=person())).json()["actions"] == []
