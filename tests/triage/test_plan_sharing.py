"""What triage works out once and reuses: plans shared by reports classed alike at one instant, payloads validated
once then given each incident's ids, policy derivations per policy version, and derived ids."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

from triage.classify import classify
from triage.escalation import plan_escalation
from triage.policy import SchoolPolicy
from triage.policy_derived import derived_from
from triage.state import _NAMESPACE, derived_id

from .builders import build_report, staff

NOW = datetime(2026, 11, 20, 16, 30, tzinfo=UTC)  # a Friday afternoon: working-day reminders cross the weekend


def test_reports_classed_alike_at_one_instant_share_a_plan_and_nothing_else_does(policy: SchoolPolicy) -> None:
    first = build_report("child_sexual_abuse_imagery", "Indecent images of children found on a staff laptop.")
    second = build_report("child_sexual_abuse_imagery", "Indecent images of children found on a staff laptop.")
    plan = plan_escalation(first, classify(first), policy, NOW)
    assert plan_escalation(second, classify(second), policy, NOW) is plan

    same_time_other_object = datetime(2026, 11, 20, 16, 30, tzinfo=UTC)
    later = plan_escalation(second, classify(second), policy, same_time_other_object)
    assert later is not plan and later == plan

    other_school = build_report("child_sexual_abuse_imagery", "Indecent images of children found on a staff laptop.",
                                school_id="school-z")
    elsewhere = plan_escalation(other_school, classify(other_school), policy, NOW)
    assert elsewhere.context.school_id == "school-z" and plan.context.school_id == "school-a"

    head = build_report("child_sexual_abuse_imagery", "Indecent images of children found on a staff laptop.",
                        [staff("Headteacher")])
    standing_aside = plan_escalation(head, classify(head), policy, NOW)
    assert "headteacher" not in [r.role for level in standing_aside.chain.levels for r in level.recipients]
    assert "headteacher" in [r.role for level in plan.chain.levels for r in level.recipients]


def test_payloads_are_the_validated_contracts_with_each_incidents_ids(policy: SchoolPolicy) -> None:
    report = build_report("youth_produced_sexual_imagery", "A nude selfie was shared in the class group chat.",
                          child_at_immediate_risk=True)
    plan = plan_escalation(report, classify(report), policy, NOW)
    for incident_id, reference in [("inc-1", "OSI-00001"), ("inc-2", "OSI-00002")]:
        assert plan.triaged_data(incident_id=incident_id, reference=reference) == plan.triaged(
            incident_id=incident_id, reference=reference).model_dump(mode="json")
        for draft in plan.first_notices:
            ids = {"notification_id": f"n-{incident_id}", "incident_id": incident_id, "reference": reference,
                   "generation": 3}
            assert draft.request_data(**ids) == draft.to_request(**ids).model_dump(mode="json")
    assert plan.stored_context == plan.context.model_dump_json()
    assert len(plan.first_notices) > 1  # the whole chain is told at once


def test_a_policy_is_derived_once_and_a_new_version_on_its_own(policy: SchoolPolicy) -> None:
    assert derived_from(policy) is derived_from(policy)
    edited = policy.model_copy(update={"school_name": "Renamed School", "version": "v2"})
    assert derived_from(edited) is not derived_from(policy)
    report = build_report("virus", "A virus warning popped up.")
    assert plan_escalation(report, classify(report), edited, NOW).context.school_name == "Renamed School"
    assert plan_escalation(report, classify(report), policy, NOW).context.school_name == policy.school_name


def test_derived_ids_are_uuid5_of_their_parts() -> None:
    for parts in [("notice", "inc-1", 0, 1, "dsl", 2), ("triaged", "x" * 40, 7), ("reminder", "é", "ü€", 1)]:
        assert derived_id(*parts) == str(uuid.uuid5(_NAMESPACE, "/".join(str(p) for p in parts)))


def test_a_draft_given_other_reminders_carries_those_not_its_originals(policy: SchoolPolicy) -> None:
    report = build_report("child_sexual_abuse_imagery", "Indecent images of children found on a staff laptop.")
    plan = plan_escalation(report, classify(report), policy, NOW)
    ids = {"notification_id": "n-1", "incident_id": "inc-1", "reference": "OSI-1", "generation": 1}
    original = plan.first_notices[0]
    assert len(original.request_data(**ids)["reminders"]) == len(plan.reminders) > 1
    overdue = replace(original, reminders=(plan.reminders[-1],))  # as an overdue reminder's re-notice is drafted
    assert overdue.request_data(**ids) == overdue.to_request(**ids).model_dump(mode="json")
    assert [r["code"] for r in overdue.request_data(**ids)["reminders"]] == [plan.reminders[-1].code]


def test_reports_made_in_the_same_second_share_a_plan_and_their_deadlines_run_from_that_second(
    policy: SchoolPolicy,
) -> None:
    report = build_report("allegation_about_staff", "A parent says a teacher messaged their child privately.")
    at = datetime(2026, 11, 20, 9, 15, 7, 120_000, tzinfo=UTC)
    plan = plan_escalation(report, classify(report), policy, NOW, reported_at=at)
    same_second = plan_escalation(report, classify(report), policy, NOW, reported_at=at.replace(microsecond=990_000))
    next_second = plan_escalation(report, classify(report), policy, NOW, reported_at=at.replace(second=8))
    assert same_second is plan and next_second is not plan
    # Reported on Friday morning, triaged in the afternoon: one working day from the morning, not the afternoon.
    (lado,) = [r for r in plan.reminders if r.code == "refer_lado"]
    assert lado.due_at == datetime(2026, 11, 23, 9, 15, 7, tzinfo=UTC)
    assert plan.cursor.next_due_at is not None and plan.cursor.next_due_at > NOW  # the chain's timeout runs from now
