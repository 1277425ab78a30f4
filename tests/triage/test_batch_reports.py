"""Reports triaged a partition batch at a time (one statement per table): the same rows and events as one by one,
a poison report dead-lettered alone, and a batch delivered again with no second effect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support.helpers import eventually, produce, read_topic
from support.triage_service import FakeClock, ack_event, csam_report, fetch, handle, reported_event, runtime_for

from common.events import CloudEvent
from common.kafka import ensure_topics
from common.topics import EventType, Topic
from triage.policy import DEFAULT_POLICY_FILE
from triage.state import notification_id

REPORTED = Topic.INCIDENTS_REPORTED.value

# Several classes, stand-ins and immediate risk, over schools with their own policies and the default one.
KINDS: list[dict[str, Any]] = [
    {},
    {"category": "youth_produced_sexual_imagery", "risk_area": "conduct", "subjects": [
        {"kind": "pupil", "identifier": "UPN-B456", "age": 12}], "description": "A nude is being shared."},
    {"category": "allegation_about_staff", "subjects": [{"kind": "staff", "staff_role": "headteacher"}],
     "description": "A parent alleges the headteacher has been messaging pupils from a personal phone."},
    {"category": "inappropriate_access_accidental", "description": "A pupil opened a gambling site by mistake."},
    {"category": "lost_or_stolen_equipment", "risk_area": "commerce", "subjects": [{"kind": "staff"}],
     "description": "An unencrypted school laptop was stolen from a car."},
    {"category": "cyberbullying", "child_at_immediate_risk": True, "subjects": [
        {"kind": "pupil", "identifier": "UPN-C789", "year_group": "Year 8"}],
     "description": "A pupil is being bullied in a group chat and says they want to hurt themselves."},
]
SCHOOLS = ["school-b", "school-c", "school-a"]  # school-a has no file: the default policy


def policy_dir(tmp_path: Path) -> Path:
    text = DEFAULT_POLICY_FILE.read_text()
    for school, name in [("school-b", "Oak Lane Primary"), ("school-c", "Elm Grove Academy")]:
        own = text.replace("school_id: default", f"school_id: {school}").replace("Example Primary School", name)
        if school == "school-c":
            own = own.replace("ack_timeout_minutes: 15", "ack_timeout_minutes: 20")
        (tmp_path / f"{school}.yaml").write_text(own)
    return tmp_path


def reports(count: int, tag: str) -> list[CloudEvent]:
    return [
        reported_event(f"inc-{tag}-{n:03d}", csam_report(SCHOOLS[n % len(SCHOOLS)], **KINDS[n % len(KINDS)]))
        for n in range(count)
    ]


async def snapshot(admin_dsn: str, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row triage wrote, in a stable order; the outbox in the order it would be published."""
    queries = {
        "incidents": "SELECT * FROM {s}.incidents ORDER BY id",
        "reminders": "SELECT * FROM {s}.reminders ORDER BY incident_id, code",
        "notifications": "SELECT * FROM {s}.notifications ORDER BY notification_id",
        "early_signals": "SELECT event_id FROM {s}.early_signals ORDER BY event_id",
        "outbox": "SELECT event_id, topic, key, value, headers::text FROM {s}.outbox ORDER BY id",
    }
    return {name: [tuple(r) for r in await fetch(admin_dsn, sql.format(s=schema))] for name, sql in queries.items()}


async def test_a_batch_of_reports_for_several_schools_gives_the_same_rows_and_events_as_one_by_one(
    stack, isolation, tmp_path
):
    clock = FakeClock()
    events = reports(12, "batch")
    retry = reported_event(events[4].subject or "", csam_report("school-c", **KINDS[4]))  # new event id
    stored_before = reported_event("inc-batch-old", csam_report("school-b"))
    early_ack = ack_event(events[1].subject or "", clock.now)  # came before its report
    stream = [*events[:6], retry, stored_before, *events[6:]]
    directory = policy_dir(tmp_path)
    schemas = {}
    for way in ("single", "batch"):
        name = f"{isolation}{way[0]}"
        runtime = runtime_for(stack, name, clock, policy_dir=directory)
        await runtime.start()
        try:
            await handle(runtime, REPORTED, stored_before)
            await handle(runtime, Topic.INCIDENTS_ACKNOWLEDGED.value, early_ack)
            if way == "single":
                for event in stream:
                    await handle(runtime, REPORTED, event)
            else:
                async with runtime.pool.acquire() as conn, conn.transaction():
                    await runtime.triage.triage_reports(stream, conn)
        finally:
            await runtime.stop()
        schemas[way] = await snapshot(stack.admin_dsn, f"{name}_triage")

    single, batch = schemas["single"], schemas["batch"]
    assert batch == single
    assert len(single["incidents"]) == len(events) + 1 and single["early_signals"] == []
    versions = {(r[2], r[7]) for r in single["incidents"]}  # (school, policy version): three policies
    assert len({v for _, v in versions}) == 3 and len(versions) == 3
    outbox = [CloudEvent.from_bytes(r[3]) for r in batch["outbox"]]
    assert outbox[0].subject == stored_before.subject
    # Per incident: triaged first, then its first notices, caused by its own report.
    for event in events:
        own = [e for e in outbox if e.subject == event.subject]
        assert own[0].type is EventType.INCIDENT_TRIAGED and own[0].id != event.id
        assert {e.type for e in own[1:]} == {EventType.NOTIFICATION_REQUESTED} and len(own) > 1
        assert {e.causationid for e in own} == {event.id}
    status = {r[0]: r[11] for r in batch["incidents"]}  # (id, ..., status)
    assert status[events[1].subject] == "acknowledged" and status[events[0].subject] == "open"


async def test_a_poison_report_in_a_consumed_batch_is_dead_lettered_and_the_others_are_triaged_once(
    stack, isolation
):
    runtime = runtime_for(stack, isolation, FakeClock(), consume=True)
    topic = f"{isolation}.{REPORTED}"
    good = reports(8, "poison")
    bad_report = reported_event("inc-poison-bad", csam_report("school-a", category="no_such_category"))
    values = [e.to_bytes() for e in good[:3]] + [bad_report.to_bytes(), b"{not an event"]
    values += [e.to_bytes() for e in good[3:]]
    # All in one partition before the consumer starts, so that its first fetch is one batch with the poison in it.
    await ensure_topics(stack.bootstrap, [topic], 3)
    await produce(stack.bootstrap, topic, values, key=b"one-partition")
    schema = f"{isolation}_triage"
    await runtime.start()
    try:
        dead = await read_topic(stack.bootstrap, f"{topic}.dlq", expect=2, timeout=60)

        async def all_handled() -> bool:
            rows = await fetch(stack.admin_dsn, f"SELECT count(*) AS n FROM {schema}.inbox")  # noqa: S608
            return bool(rows[0]["n"] == len(values))

        await eventually(all_handled, timeout=60, what="every report handled or dead-lettered")
        assert runtime.consumer is not None and runtime.consumer.dead_lettered_total == 2
    finally:
        await runtime.stop()
    assert sorted(v for v, _ in dead) == sorted([bad_report.to_bytes(), b"{not an event"])
    outcomes = await fetch(stack.admin_dsn, f"SELECT event_id, outcome FROM {schema}.inbox WHERE outcome IS NOT NULL")  # noqa: S608
    assert {r["event_id"] for r in outcomes if r["outcome"] == "dead-lettered"} >= {bad_report.id}
    rows = await snapshot(stack.admin_dsn, schema)
    assert sorted(r[0] for r in rows["incidents"]) == sorted(e.subject for e in good)
    triaged = [CloudEvent.from_bytes(r[3]) for r in rows["outbox"] if r[1] == Topic.INCIDENTS_TRIAGED.value]
    assert sorted(e.subject for e in triaged) == sorted(e.subject for e in good)  # each once
    assert len(rows["notifications"]) == sum(1 for r in rows["outbox"] if r[1] == Topic.NOTIFICATIONS_REQUESTED.value)


async def test_a_batch_delivered_again_has_no_second_effect(stack, isolation):
    runtime = runtime_for(stack, isolation, FakeClock(), consume=True)
    topic = f"{isolation}.{REPORTED}"
    first, marker = reports(6, "again"), reported_event("inc-again-marker", csam_report("school-a"))
    schema = f"{isolation}_triage"

    async def triaged(incident_id: str) -> bool:
        rows = await fetch(stack.admin_dsn, f"SELECT 1 FROM {schema}.incidents WHERE id = $1", incident_id)  # noqa: S608
        return bool(rows)

    await runtime.start()
    try:
        await produce(stack.bootstrap, topic, [e.to_bytes() for e in first], key=b"one-partition")
        await eventually(lambda: triaged(first[-1].subject or ""), timeout=60, what="the first batch")
        before = await snapshot(stack.admin_dsn, schema)
        # The same records again (a consumer that lost its offsets), then a marker behind them in the partition.
        await produce(stack.bootstrap, topic, [*(e.to_bytes() for e in first), marker.to_bytes()], key=b"one-partition")
        await eventually(lambda: triaged(marker.subject or ""), timeout=60, what="the marker behind the repeats")
        # And the same reports handed to the batch handler outside the inbox: the incidents absorb them.
        async with runtime.pool.acquire() as conn, conn.transaction():
            await runtime.triage.triage_reports(first, conn)
    finally:
        await runtime.stop()
    after = await snapshot(stack.admin_dsn, schema)
    marker_rows = {
        "incidents": [r for r in after["incidents"] if r[0] == marker.subject],
        "outbox": [r for r in after["outbox"] if CloudEvent.from_bytes(r[3]).subject == marker.subject],
    }
    assert after["incidents"] == sorted([*before["incidents"], *marker_rows["incidents"]], key=lambda r: r[0])
    assert after["outbox"] == before["outbox"] + marker_rows["outbox"]
    assert len(after["reminders"]) > len(before["reminders"]) > 0
    notice = notification_id(marker.subject or "", 0, 0, "headteacher", 1)
    assert notice in {r[0] for r in after["notifications"]}
    assert len(after["notifications"]) == len(before["notifications"]) + 2  # the marker's headteacher and DSL
