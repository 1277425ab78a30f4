"""Triage as several members of its consumer group (services scale out that way, DESIGN.md): an incident's report
and an acknowledgement or action for it handled at the same moment by two members, each in its own transaction.
Neither sees the other's uncommitted rows, so the signal is kept as early while the report's transaction has
already taken the early signals: it is stranded, and the runtime's background pass applies it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from support.helpers import eventually
from support.triage_service import (
    FakeClock,
    ack_event,
    action_event,
    fetch,
    handle,
    reported_event,
    settings_for,
    started,
)

from common.db import Connection
from common.events import CloudEvent
from common.topics import Topic
from triage.main import TriageRuntime

REPORTED = Topic.INCIDENTS_REPORTED.value
ACKED = Topic.INCIDENTS_ACKNOWLEDGED.value
ACTIONS = Topic.INCIDENTS_ACTIONS.value

Step = Callable[[Connection], Awaitable[None]]


def step(runtime: TriageRuntime, topic: str, event: CloudEvent) -> Step:
    async def run(conn: Connection) -> None:
        await runtime.triage.handlers()[topic](event, conn)

    return run


async def held_open_while(runtime: TriageRuntime, first: Step, second: Step) -> None:
    """`first` in a transaction held open while `second` runs and commits in another (a second member of the
    group), then `first` commits."""
    async with runtime.pool.acquire() as one, runtime.pool.acquire() as two, one.transaction():
        await first(one)
        async with two.transaction():
            await second(two)


async def state(admin_dsn: str, schema: str, incident_id: str) -> tuple[str, list[str]]:
    (row,) = await fetch(admin_dsn, f"SELECT status FROM {schema}.incidents WHERE id = $1", incident_id)  # noqa: S608
    kept = await fetch(admin_dsn, f"SELECT incident_id FROM {schema}.early_signals ORDER BY incident_id")  # noqa: S608
    return row["status"], [r["incident_id"] for r in kept]


async def test_an_acknowledgement_committed_while_its_report_is_being_stored_is_applied(stack, isolation):
    async with started(stack, isolation) as (runtime, clock, schema):
        # A signal for an incident triage has not seen: it waits for its report, untouched by the pass.
        await handle(runtime, ACKED, ack_event("inc-not-yet", clock.at(0)))
        await held_open_while(
            runtime,
            step(runtime, REPORTED, reported_event("inc-race-1")),
            step(runtime, ACKED, ack_event("inc-race-1", clock.at(1))),
        )
        assert await state(stack.admin_dsn, schema, "inc-race-1") == ("open", ["inc-not-yet", "inc-race-1"])

        assert await runtime.apply_stranded_signals() == 1
        assert await state(stack.admin_dsn, schema, "inc-race-1") == ("acknowledged", ["inc-not-yet"])
        assert await runtime.apply_stranded_signals() == 0
        assert (await runtime.fire_due(clock.at(600))).fired == 0  # acknowledged: nobody else is escalated to


async def test_an_action_kept_as_early_while_its_report_is_stored_is_applied(stack, isolation):
    async with started(stack, isolation) as (runtime, clock, schema):
        await held_open_while(
            runtime,
            step(runtime, ACTIONS, action_event("inc-race-2", clock.at(1), "device_secured")),
            step(runtime, REPORTED, reported_event("inc-race-2")),
        )
        assert await state(stack.admin_dsn, schema, "inc-race-2") == ("open", ["inc-race-2"])

        assert await runtime.apply_stranded_signals() == 1
        assert await state(stack.admin_dsn, schema, "inc-race-2") == ("open", [])
        (reminder,) = await fetch(
            stack.admin_dsn,
            f"SELECT closed_by FROM {schema}.reminders WHERE code = 'secure_and_isolate_device'",  # noqa: S608
        )
        assert reminder["closed_by"] == "device_secured"


async def test_the_runtime_applies_stranded_signals_in_the_background(stack, isolation):
    clock = FakeClock()
    runtime = TriageRuntime(settings_for(stack, isolation, timer_poll_seconds=0.1), clock=clock, consume=False)
    schema = f"{isolation}_triage"
    await runtime.start()
    try:
        await held_open_while(
            runtime,
            step(runtime, REPORTED, reported_event("inc-race-3")),
            step(runtime, ACKED, ack_event("inc-race-3", clock.at(1))),
        )

        async def applied() -> bool:
            return await state(stack.admin_dsn, schema, "inc-race-3") == ("acknowledged", [])

        await eventually(applied, timeout=10)
        assert runtime.metrics()["stranded_signals_applied_total"] == 1
    finally:
        await runtime.stop()
