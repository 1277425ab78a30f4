"""The triage service end to end through the real broker: a report in, triaged and notices out."""

from __future__ import annotations

import json

from support.helpers import eventually, produce, read_topic
from support.triage_service import T0, FakeClock, fetch, outbox, reported_event, runtime_for

from common.events import CloudEvent
from common.topics import EventType
from triage.state import notification_id


async def test_a_report_is_triaged_and_its_first_level_notified_through_the_broker(stack, isolation):
    runtime = runtime_for(stack, isolation, FakeClock(), consume=True)
    await runtime.start()
    try:
        event = reported_event("incident-flow-00001")
        topic = f"{isolation}.incidents.reported"
        # Delivered twice (and once more under a new event id, as an integration retry would): one effect.
        retry = reported_event("incident-flow-00001")
        await produce(stack.bootstrap, topic, [event.to_bytes(), event.to_bytes(), retry.to_bytes()],
                      key=event.key)
        triaged = await read_topic(stack.bootstrap, f"{isolation}.incidents.triaged", expect=1)
        notices = await read_topic(stack.bootstrap, f"{isolation}.notifications.requested", expect=2)
        schema = f"{isolation}_triage"

        async def both_handled() -> bool:
            return len(await fetch(stack.admin_dsn, f"SELECT event_id FROM {schema}.inbox")) == 2  # noqa: S608

        await eventually(both_handled, what="the duplicate and the retry to be handled")
        assert len(await outbox(stack.admin_dsn, schema)) == 3  # one triaged, two notices: no second effect
    finally:
        await runtime.stop()

    (value, headers), = triaged
    decided = CloudEvent.from_bytes(value)
    assert decided.type is EventType.INCIDENT_TRIAGED
    assert decided.causationid == event.id and decided.correlationid == event.correlationid
    assert decided.data["incident_class"] == "illegal"
    assert decided.data["policy_version"] == runtime.policies.default.version
    assert [level["recipients"][0]["role"] for level in decided.data["chain"]] == [
        "headteacher", "deputy_dsl", "chair_of_governors"]
    assert {r["code"] for r in decided.data["reminders"]} >= {"refer_police", "refer_iwf"}

    requested = [CloudEvent.from_bytes(v).data for v, _ in notices]
    assert sorted(n["recipient"]["role"] for n in requested) == ["dsl", "headteacher"]
    for n in requested:
        assert n["level"] == 0 and n["generation"] == 1 and n["urgency"] == "immediate"
        assert n["notification_id"] == notification_id("incident-flow-00001", 0, 0, n["recipient"]["role"], 1)
        assert "Indecent" not in json.dumps(n)  # nothing from the report's free text
    assert T0.isoformat()[:16] in decided.time.isoformat()
