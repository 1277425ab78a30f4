"""`reminder_done`: the action for any reminder with a due time that has no action of its own (the initial review
meeting, the account reset, ...). It names one of the incident's reminders; one with its own action (a referral,
the device secured, ...) is refused with the action to use, and so is a code the incident does not have."""

from __future__ import annotations

from typing import Any

import httpx
from intake_support import person, reported, triaged

from intake.config import IntakeSettings

CHAIN = [["dsl"], ["deputy_dsl"], ["headteacher"]]
REMINDERS = ("do_not_view_copy_share_delete", "initial_review_meeting", "assess_risk_questions", "inform_parents")


def _field_error(response: httpx.Response) -> tuple[str, str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    (error,) = response.json()["errors"]
    return error["field"], error["reason"]


async def _act(client: httpx.AsyncClient, incident: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post(f"/v1/incidents/{incident}/actions", headers=person("dsl"), json=body)


async def test_a_reminder_is_recorded_done_by_its_code_and_shows_on_the_status(
    settings: IntakeSettings, client: httpx.AsyncClient
) -> None:
    incident = await reported(client)
    await triaged(settings, client, incident, CHAIN, REMINDERS)
    done = await _act(client, incident, {"action": "reminder_done", "reminder": "initial_review_meeting"})
    assert done.status_code == 201, done.text
    assert done.json()["details"] == {"reminder": "initial_review_meeting"}
    status = (await client.get(f"/v1/incidents/{incident}", headers=person("headteacher"))).json()
    assert [(a["action"], a["details"]) for a in status["actions"]] == [
        ("reminder_done", {"reminder": "initial_review_meeting"})]


async def test_reminder_done_refuses_what_it_cannot_close_and_records_nothing(
    settings: IntakeSettings, client: httpx.AsyncClient
) -> None:
    incident = await reported(client)
    await triaged(settings, client, incident, CHAIN, (*REMINDERS, "refer_lado"))

    assert _field_error(await _act(client, incident, {"action": "reminder_done"})) == (
        "reminder", "required for reminder_done")
    assert _field_error(await _act(client, incident, {"action": "reminder_done", "reminder": "refer_lado"})) == (
        "reminder", "refer_lado is recorded with referral_made with agency lado, which says more than that it was done")
    assert _field_error(await _act(client, incident, {"action": "reminder_done", "reminder": "inform_parents"}))[1] \
        == "inform_parents is recorded with parents_informed or parents_not_informed, which says more than that it " \
           "was done"
    assert _field_error(await _act(client, incident, {"action": "reminder_done", "reminder": "reset_account"})) == (
        "reminder", "reset_account is not one of this incident's reminders (do_not_view_copy_share_delete, "
        "initial_review_meeting, assess_risk_questions, inform_parents, refer_lado)")
    assert _field_error(await _act(client, incident, {"action": "incident_closed", "outcome": "resolved",
                                                      "reminder": "initial_review_meeting"})) == (
        "reminder", "only reminder_done names a reminder, not incident_closed")
    field, _ = _field_error(await _act(client, incident, {"action": "reminder_done", "reminder": "Initial review"}))
    assert field == "reminder"
    status = (await client.get(f"/v1/incidents/{incident}", headers=person("dsl"))).json()
    assert status["actions"] == [] and status["status"] == "triaged"


async def test_before_triage_has_named_the_reminders_any_code_without_an_action_of_its_own_is_taken(
    client: httpx.AsyncClient
) -> None:
    """Triage, which knows the reminders then, closes only one the incident has."""
    incident = await reported(client)
    response = await _act(client, incident, {"action": "reminder_done", "reminder": "initial_review_meeting"})
    assert response.status_code == 201, response.text
    assert _field_error(await _act(client, incident, {"action": "reminder_done", "reminder": "notify_ico"}))[0] \
        == "reminder"
