"""The pure parts of the pages: action forms say what is wrong in words, the desk's order and reminders, the
report's bars and words, the governors' CSV, and who may sign in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from triage.policy import default_policy
from web.desk import age, desk_rows, open_reminders
from web.forms import check_action, form_for
from web.members import Directory, View
from web.report import bars, duration, evidence_words, governor_csv

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _iso(delta: timedelta) -> str:
    return (NOW - delta).isoformat()


@pytest.mark.parametrize(("kind", "values", "field", "message"), [
    ("referral", {"agency": "police"}, "reference_number", "Enter the reference number the agency gave you"),
    ("referral", {"reference_number": "CR/1"}, "agency", "Select who the referral was made to"),
    ("referral", {"agency": "police", "reference_number": "x" * 81}, "reference_number",
     "Reference number must be 80 characters or fewer"),
    ("device", {}, "isolated_from_network", "Select whether the device is isolated from the network"),
    ("parents", {}, "informed", "Select whether the parents have been informed"),
    ("parents", {"informed": "no", "reason": "   "}, "reason", "Enter the reason the parents have not been informed"),
    ("close", {"outcome": ""}, "outcome", "Enter the outcome of the incident"),
])
def test_a_wrong_form_says_what_is_wrong_in_words(kind: str, values: dict[str, str], field: str, message: str) -> None:
    checked = check_action(kind, values)
    assert checked.body is None
    assert checked.errors[field] == message


def test_a_right_form_becomes_intakes_action_body() -> None:
    assert check_action("referral", {"agency": "ceop", "reference_number": " CEOP-1 "}).body == {
        "action": "referral_made", "agency": "ceop", "reference_number": "CEOP-1"}
    assert check_action("device", {"isolated_from_network": "yes"}).body == {
        "action": "device_secured", "isolated_from_network": True}
    assert check_action("parents", {"informed": "yes"}).body == {"action": "parents_informed"}
    assert check_action("parents", {"informed": "no", "reason": "Risk of harm"}).body == {
        "action": "parents_not_informed", "reason": "Risk of harm"}
    assert check_action("ico", {}).body == {"action": "ico_notified"}
    assert check_action("close", {"outcome": "Referred; closed"}).body == {
        "action": "incident_closed", "outcome": "Referred; closed"}


def test_a_referral_form_offers_only_its_reminders_agencies() -> None:
    assert form_for("refer_at_once", has_due_time=True) == ("referral", ("police", "childrens_social_care"))
    assert form_for("refer_lado", has_due_time=True) == ("referral", ("lado",))
    assert check_action("referral", {"agency": "iwf", "reference_number": "1"}, ("police",)).errors == {
        "agency": "Select who the referral was made to"}


def test_any_other_reminder_with_a_due_time_is_recorded_as_done_and_a_standing_instruction_is_not() -> None:
    assert form_for("initial_review_meeting", has_due_time=True) == ("done", ())
    assert form_for("reset_account", has_due_time=True) == ("done", ())
    assert form_for("preserve_evidence", has_due_time=False) is None
    assert check_action("done", {"reminder": "initial_review_meeting"}).body == {
        "action": "reminder_done", "reminder": "initial_review_meeting"}
    # A reminder with an action of its own, or a code mangled on the way, is not 'done' by this form.
    for code in ("refer_lado", "notify_ico", "Initial review", ""):
        assert check_action("done", {"reminder": code}).errors == {
            "form": "This reminder is not one we know; reload the page and try again"}


def test_the_desk_puts_the_most_urgent_first_and_hides_closed_incidents() -> None:
    states = [
        {"incident_id": "1", "urgency": "normal", "reported_at": _iso(timedelta(days=3)), "status": "notified"},
        {"incident_id": "2", "urgency": "immediate", "reported_at": _iso(timedelta(minutes=5)), "status": "notified"},
        {"incident_id": "3", "urgency": "immediate", "reported_at": _iso(timedelta(hours=2)), "status": "notified"},
        {"incident_id": "4", "urgency": "immediate", "reported_at": _iso(timedelta(hours=9)), "status": "closed"},
    ]
    assert [r.incident_id for r in desk_rows(states, NOW)] == ["3", "2", "1"]


def test_a_reminder_closes_with_its_action_and_is_overdue_after_its_due_time() -> None:
    state = {
        "reminders": [
            {"code": "inform_parents", "owner_role": "dsl", "due_at": _iso(timedelta(hours=1))},
            {"code": "refer_at_once", "owner_role": "dsl", "due_at": _iso(timedelta(hours=1))},
            {"code": "initial_review_meeting", "owner_role": "dsl", "due_at": _iso(-timedelta(hours=1))},
        ],
        "actions": [{"action": "referral_made", "agency": "police"}],
    }
    reminders = open_reminders(state, NOW)
    assert [(r.code, r.overdue) for r in reminders] == [("inform_parents", True), ("initial_review_meeting", False)]
    state["actions"].append({"action": "incident_closed"})
    assert open_reminders(state, NOW) == []


def test_time_since_report_in_words() -> None:
    assert age(NOW - timedelta(seconds=20), NOW) == "less than a minute"
    assert age(NOW - timedelta(minutes=61), NOW) == "1 hour 1 minute"
    assert age(NOW - timedelta(days=3, hours=2, minutes=5), NOW) == "3 days 2 hours"


def test_report_bars_words_and_evidence_state() -> None:
    assert [(b.label, b.count, b.percent) for b in bars({"content": 1, "conduct": 4})] == [
        ("Conduct", 4, 100), ("Content", 1, 25)]
    assert duration(None) == "no acknowledgements yet"
    assert duration(90) == "1 minute 30 s"
    assert duration(7260) == "2 hours 1 minute"
    assert evidence_words({"intact": True, "records": 12408, "checkpoints_verified": 3}) == (
        True, "Intact: 12,408 records; 3 signed checkpoints verified")
    ok, words = evidence_words({"intact": False, "records": 10, "intact_up_to": 6,
                                "problem": {"seq": 7, "reason": "hash does not match"}})
    assert not ok and "record 7" in words and "hash does not match" in words


def test_the_governors_csv_passes_only_aggregate_rows() -> None:
    audit_csv = ("section,key,value\ntotal,incidents,3\nby_class,illegal,1\n"
                 "subjects,name,Jasmine Okonkwo-Reid\nreferrals_by_agency,police,1\n")
    assert governor_csv(audit_csv) == ("section,key,value\ntotal,incidents,3\nby_class,illegal,1\n"
                                       "referrals_by_agency,police,1\n")


def test_members_are_the_policy_contacts_with_email_in_desk_or_governor_roles() -> None:
    policy = default_policy()
    other = policy.model_copy(update={"school_id": "school-b", "school_name": "Birch Academy"})
    directory = Directory([policy])
    dsl = directory.find(" DSL@school-a.example ")
    assert dsl is not None and dsl.view is View.DESK and dsl.school_id == "default"
    chair = directory.find("chair@governors.school-a.example")
    assert chair is not None and chair.view is View.REPORT
    assert directory.find("it@school-a.example") is None  # the IT technician has no page here
    assert directory.find("nobody@school-a.example") is None
    assert Directory([policy, other]).find("dsl@school-a.example") is None  # one address, two schools: neither
