"""Due times in working time: 'within one working day' skips nights, weekends and closures."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from triage.classify import classify
from triage.escalation import plan_escalation
from triage.policy import SchoolPolicy
from triage.working_hours import WorkingHours

from .builders import build_report, staff

HOURS = WorkingHours()  # Monday to Friday, 08:00 to 17:00, Europe/London


def london(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    # January: London is on GMT, so UTC is London time.
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_one_working_day_from_friday_afternoon_is_monday_afternoon() -> None:
    assert HOURS.after_working_days(london(2025, 1, 10, 15), 1) == london(2025, 1, 13, 15)


def test_one_working_day_from_saturday_is_the_end_of_monday() -> None:
    assert HOURS.after_working_days(london(2025, 1, 11, 10), 1) == london(2025, 1, 13, 17)


def test_one_working_day_from_friday_night_is_the_end_of_monday() -> None:
    assert HOURS.after_working_days(london(2025, 1, 10, 20), 1) == london(2025, 1, 13, 17)


def test_one_working_day_from_before_school_opens_is_the_end_of_that_day() -> None:
    assert HOURS.after_working_days(london(2025, 1, 14, 6), 1) == london(2025, 1, 14, 17)


def test_a_closure_day_after_the_weekend_is_skipped_too() -> None:
    hours = WorkingHours(closed_on=(date(2025, 1, 13),))
    assert hours.after_working_days(london(2025, 1, 10, 15), 1) == london(2025, 1, 14, 15)


def test_two_working_days_span_the_weekend() -> None:
    assert HOURS.after_working_days(london(2025, 1, 9, 12), 2) == london(2025, 1, 13, 12)


def test_working_hours_follow_british_summer_time() -> None:
    # 14:00 UTC on Friday 4 July is 15:00 in London: two hours that day, then one from 08:00 London
    # on Monday, which is 09:00 London = 08:00 UTC.
    friday = datetime(2025, 7, 4, 14, tzinfo=UTC)
    assert HOURS.after_working_time(friday, timedelta(hours=2)) == datetime(2025, 7, 4, 16, tzinfo=UTC)
    assert HOURS.after_working_time(friday, timedelta(hours=3)) == datetime(2025, 7, 7, 8, tzinfo=UTC)


def test_lado_referral_reported_on_friday_evening_is_due_at_the_end_of_monday(policy: SchoolPolicy) -> None:
    report = build_report("allegation_about_staff", "Allegation received by email.", [staff()])
    plan = plan_escalation(report, classify(report), policy, london(2025, 1, 10, 18, 30))
    due = {r.code: r.due_at for r in plan.reminders}
    assert due["refer_lado"] == london(2025, 1, 13, 17)
    assert due["do_not_investigate_alone"] is None


def test_the_ico_72_hours_run_through_the_weekend(policy: SchoolPolicy) -> None:
    report = build_report("personal_data_lost", "Spreadsheet sent to the wrong address.")
    now = london(2025, 1, 10, 18, 30)
    plan = plan_escalation(report, classify(report), policy, now)
    due = {r.code: r.due_at for r in plan.reminders}
    assert due["notify_ico"] == now + timedelta(hours=72)
    assert due["refer_data_protection_officer"] == now
