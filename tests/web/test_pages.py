"""The web app in a real browser against the system as `make run` starts it: the DSL's desk, the acknowledgement
link, an action closing its reminder, the governors' report, and one school never seeing another's incident.

Every page is checked with axe-core (no serious or critical violation) and photographed at desktop and phone
widths into var/screenshots/. Tests share one system and run in file order; the last one checks, after the
escalation timeout, that the acknowledged incident did not escalate while the unacknowledged one did."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, expect
from support.web import (
    AXE,
    DESCRIPTION,
    PUPIL_NAME,
    PUPIL_UPN,
    check_page,
    links_in,
    mail_to,
    post_report,
    sign_in,
    wait_for,
)

from common.tokens import issue_person_token
from devstack.launch import LaunchedStack

API_KEY = "web-e2e-integration-key-" + "x" * 24
DSL_A = "dsl@school-a.example"
DEPUTY_A = "deputy.dsl@school-a.example"
DSL_B = "dsl@school-b.example"
CHAIR_A = "chair@governors.school-a.example"
shared: dict[str, Any] = {}


def _intake_status(system: LaunchedStack, incident_id: str, school_id: str = "school-a") -> dict[str, Any]:
    token = issue_person_token(system.token_secret, person_id="test-reader", role="dsl", school_id=school_id,
                               ttl=timedelta(minutes=5))
    answer = httpx.get(f"{system.url('intake')}/v1/incidents/{incident_id}",
                       headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _ack_link(system: LaunchedStack, address: str, reference: str) -> str | None:
    for message in mail_to(system.mail_dir, address):
        if reference in str(message.get("Subject", "")) + str(message.get_body(("plain",)).get_content()):
            links = links_in(message, "/ack/")
            if links:
                return links[0]
    return None


@pytest.fixture(scope="module")
def reports(system: LaunchedStack) -> dict[str, dict[str, Any]]:
    """Posted first, so that the escalation timeout runs while the other tests do."""
    return {
        "desk": post_report(system.url("intake"), API_KEY, "school-a"),
        "acked": post_report(system.url("intake"), API_KEY, "school-a"),
        "control": post_report(system.url("intake"), API_KEY, "school-a"),
        "school_b": post_report(system.url("intake"), API_KEY, "school-b"),
    }


def test_a_report_posted_by_an_integration_appears_on_the_dsls_desk(system, browser: Browser, reports) -> None:
    context, page = sign_in(browser, system.url("web"), system.mail_dir, DSL_A)
    cookie = next(c for c in context.cookies() if c["name"] == "session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    reference = reports["desk"]["reference"]

    row = page.locator(f"tr[data-incident='{reports['desk']['incident_id']}']")

    def on_desk() -> bool:
        page.goto(f"{system.url('web')}/desk")
        return row.count() == 1 and "Nobody yet" not in row.inner_text()

    wait_for(on_desk, 90, f"incident {reference} on the desk with the DSL told")
    expect(row.get_by_role("link", name=reference)).to_have_count(1)
    expect(row).to_contain_text("DSL")
    expect(row).to_contain_text("Youth-produced sexual imagery")
    expect(row).to_contain_text(_intake_status(system, reports["desk"]["incident_id"])["urgency"])
    check_page(page, "desk")

    page.get_by_role("link", name=reference).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Incident {reference}")
    expect(page.locator("body")).to_contain_text(PUPIL_NAME)  # the DSL sees who the pupil is
    wait_for(lambda: page.reload() or page.get_by_text("Notice sent").count() > 0, 60, "the timeline from audit")
    check_page(page, "incident")
    context.close()


def test_sign_in_can_be_asked_for_with_the_keyboard_alone(system, browser: Browser) -> None:
    context = browser.new_context()
    context.add_init_script(path=str(AXE))
    page = context.new_page()
    page.goto(f"{system.url('web')}/sign-in")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
    for _ in range(10):
        if page.evaluate("document.activeElement.id") == "email":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "email"
    page.keyboard.type("not-an-address")
    page.keyboard.press("Enter")
    summary = page.locator(".govuk-error-summary")
    expect(summary).to_contain_text("Enter an email address in the correct format")
    expect(page.get_by_label("Your school email address")).to_have_value("not-an-address")  # nothing typed lost
    assert page.title().startswith("Error: ")
    check_page(page, "sign-in-error")
    summary.get_by_role("link").click()
    assert page.evaluate("document.activeElement.id") == "email"
    context.close()


def test_sign_in_link_works_once_and_sign_out_ends_the_session(system, browser: Browser) -> None:
    context, page = sign_in(browser, system.url("web"), system.mail_dir, DSL_A)
    link = links_in(mail_to(system.mail_dir, DSL_A, "Sign in")[-1], "/sign-in/")[0]
    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text("This sign-in link has expired or has been used")
    page.goto(f"{system.url('web')}/desk")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You have signed out.")).to_be_visible()
    check_page(page, "sign-in")
    page.goto(f"{system.url('web')}/desk")
    assert page.url.endswith("/sign-in")
    context.close()


def test_the_ack_link_opened_changes_nothing_and_the_button_acknowledges(system, browser: Browser, reports) -> None:
    acked = reports["acked"]
    link = wait_for(lambda: _ack_link(system, DSL_A, acked["reference"]), 90, "the DSL's notice with its ack link")
    assert link.startswith(system.url("web") + "/ack/")
    context = browser.new_context()
    context.add_init_script(path=str(AXE))
    page = context.new_page()
    page.goto(link)
    expect(page.locator("main")).to_contain_text(acked["reference"])
    expect(page.locator("main")).to_contain_text("Alder Primary School")
    expect(page.locator("main")).to_contain_text("Youth-produced sexual imagery")
    page.reload()  # a second GET, as a mail scanner's
    assert _intake_status(system, acked["incident_id"])["acknowledgements"] == []
    check_page(page, "ack")

    page.get_by_role("button", name="Acknowledge this incident").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Incident acknowledged")
    check_page(page, "ack-done")
    status = _intake_status(system, acked["incident_id"])
    assert [(a["role"], a["via"]) for a in status["acknowledgements"]] == [("dsl", "link")]
    shared["acked_level"] = status["escalation_level"]
    page.goto(link)
    page.get_by_role("button", name="Acknowledge this incident").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("This link has already been used")
    context.close()


def test_an_action_recorded_closes_its_reminder_and_a_wrong_form_keeps_what_was_typed(
    system, browser: Browser, reports
) -> None:
    incident = reports["desk"]
    context, page = sign_in(browser, system.url("web"), system.mail_dir, DSL_A)
    page.goto(f"{system.url('web')}/incidents/{incident['incident_id']}")
    card = page.locator("#reminder-inform_parents")
    wait_for(lambda: page.reload() or card.count() == 1, 60, "the inform_parents reminder from audit")

    card.get_by_role("button", name="Record parents").click()
    expect(page.locator(".govuk-error-summary")).to_contain_text("Select whether the parents have been informed")
    page.locator("#reminder-inform_parents").get_by_label("No, and there is a reason not to").check()
    page.locator("#reminder-inform_parents").get_by_role("button", name="Record parents").click()
    expect(page.locator(".govuk-error-summary")).to_contain_text("Enter the reason the parents have not been informed")
    expect(page.locator("#reminder-inform_parents").get_by_label("No, and there is a reason not to")).to_be_checked()
    check_page(page, "incident-form-error")

    reason = "Informing them now would put the young person at risk."
    page.locator("#inform_parents-reason").fill(reason)
    form = page.locator("#reminder-inform_parents form")
    posted = {name: form.locator(f"input[name={name}]").get_attribute("value")
              for name in ("csrf_token", "form_id", "idempotency_key")}
    form.get_by_role("button", name="Record parents").click()
    expect(page.get_by_text("Recorded: Parents informed.")).to_be_visible()
    # The same form sent again (a double press): recorded once.
    again = context.request.post(f"{system.url('web')}/incidents/{incident['incident_id']}/actions/parents",
                                 form={**posted, "informed": "no", "reason": reason})
    assert again.ok, again.text()
    actions = _intake_status(system, incident["incident_id"])["actions"]
    assert [a["action"] for a in actions].count("parents_not_informed") == 1

    def reminder_gone() -> bool:
        page.reload()
        return page.locator("#reminder-inform_parents").count() == 0

    wait_for(reminder_gone, 60, "the inform_parents reminder to close")
    expect(page.locator("#reminder-initial_review_meeting")).to_have_count(1)  # the others stay open

    # A reminder without an action of its own is recorded as done; a standing instruction has no button.
    expect(page.locator("#reminder-do_not_view_copy_share_delete")).to_contain_text("A standing instruction")
    page.locator("#reminder-initial_review_meeting").get_by_role("button", name="Record as done").click()
    expect(page.get_by_text("Recorded: Reminder done.")).to_be_visible()

    def review_gone() -> bool:
        page.reload()
        return page.locator("#reminder-initial_review_meeting").count() == 0

    wait_for(review_gone, 60, "the initial_review_meeting reminder to close")
    expect(page.locator("#reminder-assess_risk_questions")).to_have_count(1)
    context.close()


def test_a_person_of_school_a_cannot_open_a_school_b_incident_by_url(system, browser: Browser, reports) -> None:
    other = reports["school_b"]
    wait_for(lambda: _intake_status(system, other["incident_id"], "school-b")["status"] != "received", 60,
             "school B's incident to be triaged")
    context, page = sign_in(browser, system.url("web"), system.mail_dir, DSL_A)
    answer = page.goto(f"{system.url('web')}/incidents/{other['incident_id']}")
    assert answer is not None and answer.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Incident not found")
    assert other["reference"] not in page.content()
    check_page(page, "not-found")
    context.close()

    context_b, page_b = sign_in(browser, system.url("web"), system.mail_dir, DSL_B)
    page_b.goto(f"{system.url('web')}/incidents/{other['incident_id']}")
    expect(page_b.get_by_role("heading", level=1)).to_have_text(f"Incident {other['reference']}")
    context_b.close()


def test_a_governor_sees_the_counts_and_no_pupil_field(system, browser: Browser, reports) -> None:
    context, page = sign_in(browser, system.url("web"), system.mail_dir, CHAIR_A)
    assert page.url.endswith("/report")
    school_a = [r for name, r in reports.items() if name != "school_b"]

    def counted() -> bool:
        page.goto(f"{system.url('web')}/report")
        return page.locator("[data-key=incidents]").inner_text() == str(len(school_a))

    wait_for(counted, 90, f"{len(school_a)} incidents in the governors' report")
    by_class = page.locator("#by-class")
    expect(by_class.get_by_role("row", name=re.compile("Youth-produced sexual imagery"))).to_contain_text(
        str(len(school_a)))
    expect(page.locator("#by-risk-area").get_by_role("row", name=re.compile("Conduct"))).to_contain_text(
        str(len(school_a)))
    expect(page.locator("#evidence-state")).to_contain_text("Intact:")
    text = page.content()
    for fragment in (PUPIL_NAME, "Jasmine", PUPIL_UPN, DESCRIPTION, "Year 6"):
        assert fragment not in text
    check_page(page, "report")

    page.get_by_role("button", name="Verify now").click()
    expect(page.get_by_text("Verified just now")).to_be_visible()
    check_page(page, "report-verified")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download this report as CSV").click()
    csv_text = download.value.path().read_text()
    assert f"total,incidents,{len(school_a)}" in csv_text
    for fragment in (PUPIL_NAME, "Jasmine", PUPIL_UPN, "nude", "Year 6"):
        assert fragment not in csv_text

    answer = page.goto(f"{system.url('web')}/incidents/{reports['desk']['incident_id']}")
    assert answer is not None and answer.status == 403
    assert PUPIL_NAME not in page.content()
    context.close()


def test_the_acknowledged_incident_did_not_escalate_and_the_unacknowledged_one_did(system, reports) -> None:
    """After the one-minute acknowledgement timeout: the deputy DSL is told of the control incident only."""
    control, acked = reports["control"], reports["acked"]
    wait_for(lambda: _ack_link(system, DEPUTY_A, control["reference"]), 150,
             "the unacknowledged control incident to escalate to the deputy DSL")
    assert _ack_link(system, DEPUTY_A, acked["reference"]) is None
    assert _intake_status(system, acked["incident_id"])["escalation_level"] == shared["acked_level"]
