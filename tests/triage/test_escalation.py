"""Escalation planning and the timer state machine: pure, with the clock passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from common.contracts import ActionKind, Agency, IncidentClass, Urgency
from common.reminders import own_action_of, reminders_closed_by
from triage.classify import classify
from triage.escalation import (
    EscalationCursor,
    EscalationPlan,
    FrozenChain,
    TimerOutcome,
    next_step,
    plan_escalation,
)
from triage.policy import SchoolPolicy

from .builders import build_report, pupil, staff

NOW = datetime(2025, 1, 10, 14, 30, tzinfo=UTC)


def illegal_plan(policy: SchoolPolicy, **kwargs: bool) -> EscalationPlan:
    report = build_report("child_sexual_abuse_imagery", "Images found on a school laptop.", [pupil()], **kwargs)
    return plan_escalation(report, classify(report), policy, NOW)


def test_an_unacknowledged_illegal_report_walks_every_level_then_repeats_at_the_top(policy: SchoolPolicy) -> None:
    plan = illegal_plan(policy)
    chain, cursor = plan.chain, plan.cursor
    assert [n.recipient.role for n in plan.first_notices] == ["headteacher", "dsl"]
    assert cursor == EscalationCursor(level=0, repeat=0, next_due_at=NOW + timedelta(minutes=15))

    early = next_step(chain, cursor, NOW + timedelta(minutes=14))
    assert early.outcome == TimerOutcome.NOT_YET_DUE and early.cursor == cursor and not early.notify

    t1 = NOW + timedelta(minutes=15)
    to_deputy = next_step(chain, cursor, t1)
    assert to_deputy.outcome == TimerOutcome.ESCALATED
    assert [r.role for r in to_deputy.notify] == ["deputy_dsl"]
    assert to_deputy.cursor == EscalationCursor(level=1, repeat=0, next_due_at=t1 + timedelta(minutes=15))

    t2 = t1 + timedelta(minutes=15)
    to_chair = next_step(chain, to_deputy.cursor, t2)
    assert to_chair.outcome == TimerOutcome.ESCALATED and to_chair.from_level == 1
    assert [r.role for r in to_chair.notify] == ["chair_of_governors"]
    assert to_chair.cursor == EscalationCursor(level=2, repeat=0, next_due_at=t2 + timedelta(minutes=30))

    t3 = t2 + timedelta(minutes=30)
    first_repeat = next_step(chain, to_chair.cursor, t3)
    assert first_repeat.outcome == TimerOutcome.REPEATED
    assert [r.role for r in first_repeat.notify] == ["chair_of_governors"]
    assert first_repeat.cursor == EscalationCursor(level=2, repeat=1, next_due_at=t3 + timedelta(minutes=30))

    t4 = t3 + timedelta(minutes=30)
    second_repeat = next_step(chain, first_repeat.cursor, t4)
    assert second_repeat.cursor == EscalationCursor(level=2, repeat=2, next_due_at=t4 + timedelta(minutes=30))


def test_a_late_timer_counts_the_next_timeout_from_when_it_fired(policy: SchoolPolicy) -> None:
    plan = illegal_plan(policy)
    late = NOW + timedelta(hours=3)
    step = next_step(plan.chain, plan.cursor, late)
    assert step.cursor.level == 1 and step.cursor.next_due_at == late + timedelta(minutes=15)


def test_repeats_stop_when_the_chain_allows_only_so_many(policy: SchoolPolicy) -> None:
    chain = illegal_plan(policy).chain.model_copy(update={"max_repeats": 1})
    top = EscalationCursor(level=2, repeat=1, next_due_at=NOW)
    step = next_step(chain, top, NOW)
    assert step.outcome == TimerOutcome.EXHAUSTED and step.cursor.next_due_at is None and not step.notify
    assert next_step(chain, step.cursor, NOW + timedelta(days=30)).outcome == TimerOutcome.EXHAUSTED


def test_a_child_at_immediate_risk_tells_the_whole_chain_at_once(policy: SchoolPolicy) -> None:
    plan = illegal_plan(policy, child_at_immediate_risk=True)
    told = [(n.level, n.recipient.role) for n in plan.first_notices]
    assert told == [(0, "headteacher"), (0, "dsl"), (1, "deputy_dsl"), (2, "chair_of_governors")]
    assert plan.cursor == EscalationCursor(level=2, repeat=0, next_due_at=NOW + timedelta(minutes=30))
    assert plan.context.urgency == Urgency.IMMEDIATE


def test_the_headteacher_accused_is_not_told_and_the_chair_of_governors_owns_the_lado_referral(
    policy: SchoolPolicy,
) -> None:
    report = build_report("allegation_about_staff", "Allegation from a parent.", [staff("headteacher")])
    plan = plan_escalation(report, classify(report), policy, NOW)
    roles = [level.roles for level in plan.chain.levels]
    assert roles == [("chair_of_governors",)]
    owners = {r.code: r.owner_role for r in plan.reminders}
    assert owners["refer_lado"] == "chair_of_governors"
    assert "policy.stand-in.headteacher" in [r.rule for r in plan.reasons]


def test_the_frozen_chain_carries_contacts_and_the_policy_version_and_survives_the_contract(
    policy: SchoolPolicy,
) -> None:
    plan = illegal_plan(policy)
    triaged = plan.triaged(incident_id="inc-1", reference="OSI-7K2QF")
    assert triaged.policy_version == policy.version
    assert triaged.incident_class == IncidentClass.ILLEGAL
    assert FrozenChain.from_contract(triaged.chain) == plan.chain
    first = plan.chain.levels[0].recipients[0]
    assert first.channels[0].address == "head@school-a.example"


def test_no_message_carries_a_childs_name_date_of_birth_identifier_or_the_description(
    policy: SchoolPolicy,
) -> None:
    description = "Jessica Marlowe-Smith shared a nude photo in the group chat on her phone."
    subject = pupil("Year 6", name="Jessica Marlowe-Smith", date_of_birth="2014-02-03T00:00:00Z")
    report = build_report("youth_produced_sexual_imagery", description, [subject], child_at_immediate_risk=True)
    plan = plan_escalation(report, classify(report), policy, NOW)
    assert plan.first_notices
    for notice in plan.first_notices:
        words = " ".join([notice.headline, *notice.body, *(r.text for r in notice.reminders)])
        for secret in ("Jessica", "Marlowe", "2014-02-03", "03/02/2014", "UPN-A123", description, "group chat on"):
            assert secret not in words


def test_a_notice_becomes_a_notification_request_with_its_ids(policy: SchoolPolicy) -> None:
    notice = illegal_plan(policy).first_notices[0]
    request = notice.to_request(notification_id="n-1", incident_id="inc-1", reference="OSI-1", generation=1)
    assert request.recipient.role == "headteacher" and request.level == 0 and request.generation == 1
    assert request.urgency == Urgency.IMMEDIATE and request.reason == "first notice"
    assert {r.code for r in request.reminders} >= {"refer_police", "secure_and_isolate_device"}


def test_timer_steps_are_drafted_into_notices_for_the_next_level(policy: SchoolPolicy) -> None:
    plan = illegal_plan(policy)
    step = next_step(plan.chain, plan.cursor, NOW + timedelta(minutes=15))
    notices = plan.notices_for(step)
    assert [(n.level, n.recipient.role) for n in notices] == [(1, "deputy_dsl")]
    assert "did not acknowledge" in notices[0].reason


def test_recorded_actions_close_their_reminders() -> None:
    assert reminders_closed_by(ActionKind.REFERRAL_MADE, Agency.CEOP) == {"refer_ceop"}
    assert reminders_closed_by(ActionKind.REFERRAL_MADE, Agency.POLICE) == {"refer_police", "refer_at_once"}
    assert reminders_closed_by(ActionKind.REFERRAL_MADE, Agency.CHILDRENS_SOCIAL_CARE) == {
        "refer_childrens_social_care",
        "refer_at_once",
    }
    assert reminders_closed_by(ActionKind.REFERRAL_MADE, Agency.LADO) == {"refer_lado", "refer_lado_at_once"}
    assert reminders_closed_by(ActionKind.REFERRAL_MADE, None) == set()
    assert reminders_closed_by(ActionKind.DEVICE_SECURED, None) == {"secure_and_isolate_device"}
    assert reminders_closed_by(ActionKind.PARENTS_INFORMED, None) == {"inform_parents"}
    assert reminders_closed_by(ActionKind.PARENTS_NOT_INFORMED, None) == {"inform_parents"}
    assert reminders_closed_by(ActionKind.ICO_NOTIFIED, None) == {"notify_ico"}
    assert reminders_closed_by(ActionKind.INCIDENT_CLOSED, None, ["refer_lado", "notify_ico"]) == {
        "refer_lado",
        "notify_ico",
    }


def test_reminder_done_closes_the_reminder_it_names_unless_that_one_has_an_action_of_its_own(
    policy: SchoolPolicy,
) -> None:
    assert reminders_closed_by(ActionKind.REMINDER_DONE, None, reminder="initial_review_meeting") == {
        "initial_review_meeting"}
    assert reminders_closed_by(ActionKind.REMINDER_DONE, None) == set()
    assert reminders_closed_by(ActionKind.REMINDER_DONE, None, reminder="refer_at_once") == set()
    assert own_action_of("refer_at_once") == "referral_made with agency police or childrens_social_care"
    assert own_action_of("secure_and_isolate_device") == "device_secured"
    # Every reminder of the default policy with a due time can be closed by some action; the rest are standing
    # instructions (never chased).
    standing = sorted(code for code, r in policy.reminders.items() if r.due is None)
    assert standing == ["do_not_investigate_alone", "do_not_view_copy_share_delete", "preserve_evidence"]
    for code, reminder in policy.reminders.items():
        if reminder.due is not None:
            assert own_action_of(code) or reminders_closed_by(ActionKind.REMINDER_DONE, None, reminder=code), code


def test_every_referral_agency_closes_a_reminder_the_default_policy_defines(policy: SchoolPolicy) -> None:
    for agency in Agency:
        closed = reminders_closed_by(ActionKind.REFERRAL_MADE, agency)
        assert closed and closed <= set(policy.reminders), agency
