"""Escalation timers on a fake clock against the real database: every level, restarts, two processes,
acknowledgement and closure (the fencing generation), failed notices, reminders."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from support.triage_service import (
    FakeClock,
    ack_event,
    action_event,
    csam_report,
    escalation_notices,
    failed_event,
    fetch,
    handle,
    of_type,
    outbox,
    reported_event,
    runtime_for,
    started,
)

from common.events import CloudEvent
from common.logging import configure
from common.topics import EventType

from .builders import build_report, staff

REPORTED, ACKED, ACTIONS, FAILED = "incidents.reported", "incidents.acknowledged", "incidents.actions", \
    "notifications.failed"


async def test_escalation_walks_every_level_then_repeats_the_top_and_says_so(stack, isolation):
    async with started(stack, isolation) as (runtime, clock, schema):
        await handle(runtime, REPORTED, reported_event("inc-walk-1"))
        assert (await runtime.fire_due(clock.at(14))).fired == 0
        steps = []
        for minute in (15, 29, 30, 59, 60, 90):  # illegal: 15 min, 15 min, 30 min, then every 30 min
            steps.append((minute, (await runtime.fire_due(clock.at(minute))).fired))
        assert steps == [(15, 1), (29, 0), (30, 1), (59, 0), (60, 1), (90, 1)]

    events = await outbox(stack.admin_dsn, schema)
    assert escalation_notices(events) == [
        (0, 1, "headteacher"), (0, 1, "dsl"), (1, 1, "deputy_dsl"), (2, 1, "chair_of_governors"),
        (2, 1, "chair_of_governors"), (2, 1, "chair_of_governors"),
    ]
    escalated = [(e.data["from_level"], e.data["to_level"], e.data["repeat"])
                 for e in of_type(events, EventType.INCIDENT_ESCALATED)]
    assert escalated == [(0, 1, 0), (1, 2, 0), (2, 2, 1), (2, 2, 2)]
    repeats = [e.data["reason"] for e in of_type(events, EventType.INCIDENT_ESCALATED)][2:]
    assert all("chain is exhausted" in r and "repeating the top level" in r for r in repeats)
    ids = [e.data["notification_id"] for e in of_type(events, EventType.NOTIFICATION_REQUESTED)]
    assert len(ids) == len(set(ids))
    # notify withholds what an acknowledgement makes moot by this, however late triage requested it
    assert all(e.data["purpose"] == ("reminder" if e.data["reason"].startswith("overdue reminder") else "escalation")
               for e in of_type(events, EventType.NOTIFICATION_REQUESTED))


async def test_timers_survive_a_restart_of_triage(stack, isolation):
    clock = FakeClock()
    first = runtime_for(stack, isolation, clock)
    await first.start()
    try:
        await handle(first, REPORTED, reported_event("inc-restart-1"))
        assert (await first.fire_due(clock.at(15))).escalated == 1
    finally:
        await first.stop()

    second = runtime_for(stack, isolation, clock)  # a new process: only the database remembers
    await second.start()
    try:
        assert (await second.fire_due(clock.at(31))).escalated == 1
        assert (await second.fire_due(clock.at(62))).repeated == 1
    finally:
        await second.stop()
    events = await outbox(stack.admin_dsn, f"{isolation}_triage")
    assert [role for _, _, role in escalation_notices(events)] == [
        "headteacher", "dsl", "deputy_dsl", "chair_of_governors", "chair_of_governors"]


async def test_two_triage_processes_firing_at_once_neither_miss_nor_double_a_timer(stack, isolation):
    clock = FakeClock()
    a = runtime_for(stack, isolation, clock, timer_batch=3)
    b = runtime_for(stack, isolation, clock, timer_batch=3)
    await a.start()
    await b.start()
    try:
        incidents = [f"inc-pair-{n:02d}" for n in range(30)]
        for incident in incidents:
            await handle(a, REPORTED, reported_event(incident))
        totals = [0, 0]
        for minute in (15, 30, 60):
            ra, rb = await asyncio.gather(a.fire_due(clock.at(minute)), b.fire_due(clock.at(minute)))
            assert ra.fired + rb.fired == len(incidents)
            assert not set(ra.incidents) & set(rb.incidents)
            totals[0] += ra.fired
            totals[1] += rb.fired
            assert (await a.fire_due(clock.now)).fired == 0  # nothing left behind
    finally:
        await a.stop()
        await b.stop()
    assert min(totals) > 0, f"both processes should have done some of the work: {totals}"
    events = await outbox(stack.admin_dsn, f"{isolation}_triage")
    escalated = of_type(events, EventType.INCIDENT_ESCALATED)
    assert len(escalated) == 3 * len(incidents)
    assert len({(e.subject, e.data["to_level"], e.data["repeat"]) for e in escalated}) == len(escalated)


async def test_acknowledgement_stops_the_timers_and_a_stale_generation_does_nothing(stack, isolation):
    async with started(stack, isolation) as (runtime, clock, schema):
        await handle(runtime, REPORTED, reported_event("inc-ack-1"))
        assert (await runtime.fire_due(clock.at(15))).escalated == 1
        await handle(runtime, ACKED, ack_event("inc-ack-1", clock.at(20), role="deputy_dsl"))
        await handle(runtime, ACKED, ack_event("inc-ack-1", clock.at(21)))  # a second one changes nothing
        # A failure report for a notice of the old generation, then the timers long after: nothing is sent.
        await handle(runtime, FAILED, failed_event("inc-ack-1", role="deputy_dsl", level=1, generation=1))
        assert (await runtime.fire_due(clock.at(600))).fired == 0
    columns = "status, generation, next_due_at, acknowledged_by"
    (row,) = await fetch(stack.admin_dsn, f"SELECT {columns} FROM {schema}.incidents")  # noqa: S608
    assert (row["status"], row["generation"], row["next_due_at"], row["acknowledged_by"]) == (
        "acknowledged", 2, None, "deputy_dsl")
    events = await outbox(stack.admin_dsn, schema)
    assert [role for _, _, role in escalation_notices(events)] == ["headteacher", "dsl", "deputy_dsl"]
    assert len(of_type(events, EventType.INCIDENT_ESCALATED)) == 1


async def test_an_acknowledgement_or_closure_from_outside_the_chain_does_not_stop_the_escalation(stack, isolation):
    """DESIGN.md: governors read the log; the people an incident is escalated to acknowledge and close it. An
    allegation about the headteacher goes to the chair of governors instead, and the headteacher's own
    acknowledgement or closure must not stop it. (Intake refuses these once it knows the chain; this is for what it
    accepted before it did.)"""
    about_the_head = build_report("allegation_about_staff", "Allegation from a parent.", [staff("Head Teacher")])
    async with started(stack, isolation) as (runtime, clock, schema):
        await handle(runtime, REPORTED, reported_event("inc-illegal", csam_report()))
        await handle(runtime, REPORTED, reported_event("inc-head", about_the_head.model_dump(mode="json")))
        for incident, role in (("inc-illegal", "governor"), ("inc-head", "headteacher"), ("inc-head", "Head Teacher")):
            await handle(runtime, ACKED, ack_event(incident, clock.at(1), role=role))
            await handle(runtime, ACTIONS, action_event(incident, clock.at(2), "incident_closed", role=role))
        rows = await fetch(stack.admin_dsn, f"SELECT id, status, generation FROM {schema}.incidents ORDER BY id")  # noqa: S608
        assert [(r["id"], r["status"], r["generation"]) for r in rows] == [("inc-head", "open", 1),
                                                                           ("inc-illegal", "open", 1)]
        assert (await runtime.fire_due(clock.at(15))).escalated == 1  # the illegal report's deputy DSL, on time
        # The people in the chain do stop it: the chair of governors for the allegation about the head.
        await handle(runtime, ACKED, ack_event("inc-head", clock.at(16), role="Chair of Governors"))
        await handle(runtime, ACKED, ack_event("inc-illegal", clock.at(16), role="deputy_dsl"))
        assert (await runtime.fire_due(clock.at(600))).fired == 0
    rows = await fetch(stack.admin_dsn, f"SELECT id, status, acknowledged_by FROM {schema}.incidents ORDER BY id")  # noqa: S608
    assert [(r["id"], r["status"], r["acknowledged_by"]) for r in rows] == [
        ("inc-head", "acknowledged", "Chair of Governors"), ("inc-illegal", "acknowledged", "deputy_dsl")]


async def test_a_failed_notice_of_the_current_level_escalates_at_once(stack, isolation):
    async with started(stack, isolation) as (runtime, clock, _):
        await handle(runtime, REPORTED, reported_event("inc-fail-1"))
        clock.at(2)
        await handle(runtime, FAILED, failed_event("inc-fail-1", role="dsl", level=0, generation=1))
        await handle(runtime, FAILED, failed_event("inc-fail-1", role="headteacher", level=0, generation=1))
        assert (await runtime.fire_due(clock.at(16))).fired == 0  # level 1's own timeout runs from minute 2
        assert (await runtime.fire_due(clock.at(17))).escalated == 1
    events = await outbox(stack.admin_dsn, f"{isolation}_triage")
    escalated = of_type(events, EventType.INCIDENT_ESCALATED)
    assert [(e.data["from_level"], e.data["to_level"]) for e in escalated] == [(0, 1), (1, 2)]
    assert "could not be delivered" in escalated[0].data["reason"]


async def test_actions_close_their_reminders_overdue_ones_renotify_and_closing_stops_everything(stack, isolation):
    async with started(stack, isolation) as (runtime, clock, schema):
        await handle(runtime, REPORTED, reported_event("inc-act-1"))
        await handle(runtime, ACKED, ack_event("inc-act-1", clock.at(5)))
        await handle(runtime, ACTIONS, action_event("inc-act-1", clock.at(10), "referral_made", "police"))
        await handle(runtime, ACTIONS, action_event("inc-act-1", clock.at(10), "referral_made", "lado"))
        await handle(runtime, ACTIONS, action_event("inc-act-1", clock.at(11), "device_secured"))
        # Acknowledged, but the IWF referral is still not recorded an hour on: its owner is told, once.
        first = await runtime.fire_due(clock.at(61))
        again = await runtime.fire_due(clock.at(62))
        later = await runtime.fire_due(clock.at(122))
        await handle(runtime, ACTIONS, action_event("inc-act-1", clock.at(130), "incident_closed"))
        after_close = await runtime.fire_due(clock.at(10_000))
    assert (first.reminders, again.reminders, later.reminders, after_close.reminders) == (1, 0, 1, 0)
    assert after_close.fired == 0
    rows = await fetch(stack.admin_dsn, f"SELECT code, closed_by FROM {schema}.reminders")  # noqa: S608
    closed = {r["code"]: r["closed_by"] for r in rows}
    assert closed["refer_police"] == closed["refer_lado_at_once"] == "referral_made"  # a shared laptop: at once
    assert closed["secure_and_isolate_device"] == "device_secured"
    assert set(closed.values()) <= {"referral_made", "device_secured", "incident_closed"}
    assert None not in closed.values()
    events = await outbox(stack.admin_dsn, schema)
    overdue = [e.data for e in of_type(events, EventType.NOTIFICATION_REQUESTED)
               if e.data["reason"].startswith("overdue reminder")]
    assert [(n["recipient"]["role"], [r["code"] for r in n["reminders"]]) for n in overdue] == [
        ("headteacher", ["refer_iwf"]), ("headteacher", ["refer_iwf"])]
    assert [n["purpose"] for n in overdue] == ["reminder", "reminder"]  # they go, acknowledged or not
    (status,) = await fetch(stack.admin_dsn, f"SELECT status, generation FROM {schema}.incidents")  # noqa: S608
    assert (status["status"], status["generation"]) == ("closed", 3)


async def test_an_acknowledgement_that_arrives_before_the_report_is_applied_when_it_is_triaged(stack, isolation):
    async with started(stack, isolation) as (runtime, clock, _):
        await handle(runtime, ACKED, ack_event("inc-early-1", clock.at(0)))
        await handle(runtime, REPORTED, reported_event("inc-early-1"))
        assert (await runtime.fire_due(clock.at(600))).fired == 0
    (row,) = await fetch(stack.admin_dsn, f"SELECT status FROM {isolation}_triage.incidents")  # noqa: S608
    assert row["status"] == "acknowledged"


async def test_a_school_without_a_policy_of_its_own_is_said_once(stack, isolation, capsys):
    """Its incidents are escalated with the default policy's contacts, which are placeholders until the operator
    edits them: the log says so (once per school), so that nobody assumes the school's own people were told."""
    clock = FakeClock()
    runtime = runtime_for(stack, isolation, clock)
    configure("tests", fmt="json", level="info")
    await runtime.start()
    try:
        for n, school in enumerate(("school-zz", "school-zz", "school-yy")):
            await handle(runtime, REPORTED, reported_event(f"inc-nopolicy-{n}", csam_report(school_id=school)))
    finally:
        await runtime.stop()
        configure("tests", fmt="json", level="warning")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    said = [line["school"] for line in lines if line.get("event") == "triage.school_without_policy"]
    assert said == ["school-zz", "school-yy"]


async def test_reminder_deadlines_run_from_when_the_school_reported_not_from_when_triage_caught_up(stack, isolation):
    lost_data = csam_report(category="personal_data_lost", risk_area="commerce",
                            description="A memory stick with pupils' SEN records was left on a bus.")
    async with started(stack, isolation) as (runtime, clock, schema):
        now = clock.at(0)
        # Reported on Saturday morning; triage (or the broker) was down until Monday 10:00.
        await handle(runtime, REPORTED, reported_event("inc-late-1", lost_data,
                                                       reported_at=now - timedelta(hours=48, microseconds=250)))
        # A clock ahead of triage's cannot move a deadline later than triage's own now.
        await handle(runtime, REPORTED, reported_event("inc-ahead-1", lost_data, reported_at=now + timedelta(hours=5)))
        rows = await fetch(stack.admin_dsn, f"SELECT incident_id, due_at, next_notify_at FROM {schema}.reminders "  # noqa: S608
                           "WHERE code = 'notify_ico' ORDER BY incident_id")
        # Still due 72 hours after the report: its owner is told when it is due, not 48 hours after that.
        await runtime.fire_due(clock.at(23 * 60 + 59))
        nothing_yet = _ico_overdue(await outbox(stack.admin_dsn, schema))
        await runtime.fire_due(clock.at(24 * 60 + 1))
        told = _ico_overdue(await outbox(stack.admin_dsn, schema))
    assert [(r["incident_id"], r["due_at"]) for r in rows] == [
        ("inc-ahead-1", now + timedelta(hours=72)),
        ("inc-late-1", now + timedelta(hours=24, seconds=-1)),  # truncated to the second: never later
    ]
    assert (nothing_yet, told) == ([], ["inc-late-1"])
    events = await outbox(stack.admin_dsn, schema)
    (late,) = [e.data for e in of_type(events, EventType.INCIDENT_TRIAGED) if e.data["incident_id"] == "inc-late-1"]
    (ico,) = [r for r in late["reminders"] if r["code"] == "notify_ico"]
    assert ico["due_at"] == (now + timedelta(hours=24, seconds=-1)).isoformat().replace("+00:00", "Z")


def _ico_overdue(events: list[CloudEvent]) -> list[str]:
    """The incidents whose ICO reminder was overdue and re-notified, in order."""
    return [e.data["incident_id"] for e in of_type(events, EventType.NOTIFICATION_REQUESTED)
            if e.data["reason"].startswith("overdue reminder")
            and [r["code"] for r in e.data["reminders"]] == ["notify_ico"]]


async def test_a_reminder_without_an_action_of_its_own_is_chased_until_recorded_done(stack, isolation):
    """The initial review meeting (UKCIS: within a working day) was in every notice but never chased: only reminders
    with an action of their own were. Now any reminder with a due time is, until `reminder_done` names it; a standing
    instruction (do not view, copy, share or delete) has no due time and is never overdue."""
    nude = csam_report(category="youth_produced_sexual_imagery", risk_area="conduct",
                       subjects=[{"kind": "pupil", "identifier": "P-1044", "year_group": "Year 9"}],
                       description="A Year 9 pupil says a nude of them is being passed round a group chat.")
    async with started(stack, isolation) as (runtime, clock, schema):
        await handle(runtime, REPORTED, reported_event("inc-yp-1", nude))
        await handle(runtime, ACKED, ack_event("inc-yp-1", clock.at(5)))
        await handle(runtime, ACTIONS, action_event("inc-yp-1", clock.at(6), "parents_informed", role="dsl"))
        due = await runtime.fire_due(clock.at(24 * 60 + 1))  # Tuesday 10:01: a working day on
        await handle(runtime, ACTIONS, action_event("inc-yp-1", clock.at(24 * 60 + 30), "reminder_done", role="dsl",
                                                    reminder="initial_review_meeting"))
        later = await runtime.fire_due(clock.at(3 * 24 * 60))
        rows = await fetch(stack.admin_dsn, f"SELECT code, closed_by, next_notify_at FROM {schema}.reminders "  # noqa: S608
                           "ORDER BY code")
    events = await outbox(stack.admin_dsn, schema)
    overdue = [[r["code"] for r in e.data["reminders"]] for e in of_type(events, EventType.NOTIFICATION_REQUESTED)
               if e.data["purpose"] == "reminder"]
    assert (due.reminders, later.reminders) == (3, 2)
    chased_then, chased_later = sorted(c for (c,) in overdue[:3]), sorted(c for (c,) in overdue[3:])
    assert chased_then == ["assess_risk_questions", "initial_review_meeting", "refer_report_remove"]
    assert chased_later == ["assess_risk_questions", "refer_report_remove"]  # done: no longer chased
    by_code = {r["code"]: r for r in rows}
    assert by_code["initial_review_meeting"]["closed_by"] == "reminder_done"
    assert by_code["inform_parents"]["closed_by"] == "parents_informed"
    assert by_code["do_not_view_copy_share_delete"]["next_notify_at"] is None  # a standing instruction
