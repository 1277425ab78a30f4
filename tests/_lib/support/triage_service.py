"""Helpers for the triage service tests: a fake clock, reports, runtimes on a test schema, the outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from common.events import CloudEvent, new_event
from common.topics import EventType
from triage.config import TriageSettings
from triage.main import TriageRuntime

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday, in working hours


@dataclass
class FakeClock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, minutes: float) -> datetime:
        self.now = T0 + timedelta(minutes=minutes)
        return self.now


def settings_for(stack: Any, isolation: str, **extra: Any) -> TriageSettings:
    return TriageSettings(
        db_schema=f"{isolation}_triage", database_url=stack.admin_dsn, kafka_bootstrap_servers=stack.bootstrap,
        topic_prefix=f"{isolation}.", outbox_poll_seconds=0.2, **extra,
    )


def runtime_for(stack: Any, isolation: str, clock: FakeClock, *, consume: bool = False, **extra: Any) -> TriageRuntime:
    """A triage runtime on the test's schema; by default without consumer or background loops (tests drive them)."""
    return TriageRuntime(settings_for(stack, isolation, **extra), clock=clock, run_background=False, consume=consume)


@asynccontextmanager
async def started(stack: Any, isolation: str, **extra: Any) -> AsyncIterator[tuple[TriageRuntime, FakeClock, str]]:
    """`runtime_for` on a fresh fake clock, started for the block and stopped after it: (runtime, clock, schema)."""
    clock = FakeClock()
    runtime = runtime_for(stack, isolation, clock, **extra)
    await runtime.start()
    try:
        yield runtime, clock, f"{isolation}_triage"
    finally:
        await runtime.stop()


def csam_report(school_id: str = "school-a", **overrides: Any) -> dict[str, Any]:
    report = {
        "school_id": school_id,
        "reporter": {"role": "IT technician"},
        "occurred_at": "2026-11-23T09:30:00Z",
        "where": "ICT suite",
        "category": "child_sexual_abuse_imagery",
        "risk_area": "content",
        "subjects": [{"kind": "unknown"}],
        "description": "Indecent images of children found on a shared laptop during a routine check.",
        "evidence": {"device": "laptop 4471", "location": "locked cupboard"},
    }
    return {**report, **overrides}


def reported_event(incident_id: str, report: dict[str, Any] | None = None, *,
                   reported_at: datetime | None = None) -> CloudEvent:
    """`incidents.reported` as intake publishes it; its time (when intake accepted it) is now unless given."""
    report = report or csam_report()
    return new_event(
        EventType.INCIDENT_REPORTED, source="tests", subject=incident_id, schoolid=report["school_id"],
        data={"incident_id": incident_id, "reference": "OSI-" + incident_id[-5:].upper(), "integration_id": "cpoms",
              "report": report},
        **({"clock": lambda: reported_at} if reported_at is not None else {}),
    )


def _signal(type_: EventType, incident_id: str, data: dict[str, Any]) -> CloudEvent:
    return new_event(type_, source="tests", subject=incident_id, schoolid="school-a", data=data)


def ack_event(incident_id: str, at: datetime, role: str = "dsl") -> CloudEvent:
    return _signal(EventType.INCIDENT_ACKNOWLEDGED, incident_id,
                   {"incident_id": incident_id, "by": {"role": role}, "at": at.isoformat(), "via": "link"})


def action_event(
    incident_id: str, at: datetime, action: str, agency: str | None = None, role: str = "headteacher",
    reminder: str | None = None,
) -> CloudEvent:
    return _signal(EventType.INCIDENT_ACTION_RECORDED, incident_id, {
        "action_id": f"a-{incident_id}-{action}-{agency}-{role}-{reminder}", "incident_id": incident_id,
        "action": action, "by": {"role": role}, "at": at.isoformat(), "agency": agency, "reminder": reminder,
    })


def failed_event(incident_id: str, *, role: str, level: int, generation: int) -> CloudEvent:
    return _signal(EventType.NOTIFICATION_FAILED, incident_id, {
        "notification_id": f"n-{incident_id}-{role}-{level}-{generation}", "incident_id": incident_id,
        "recipient_role": role, "level": level, "generation": generation, "errors": ["smtp 550", "sms rejected"],
    })


async def handle(runtime: TriageRuntime, topic: str, event: CloudEvent) -> None:
    """Run a handler as the consumer does: in one transaction (without going through the broker)."""
    async with runtime.pool.acquire() as conn, conn.transaction():
        await runtime.triage.handlers()[topic](event, conn)


async def outbox(admin_dsn: str, schema: str) -> list[CloudEvent]:
    rows = await fetch(admin_dsn, f"SELECT value FROM {schema}.outbox ORDER BY id")  # noqa: S608 - test schema
    return [CloudEvent.from_bytes(r["value"]) for r in rows]


async def fetch(admin_dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(admin_dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def of_type(events: list[CloudEvent], type_: EventType) -> list[CloudEvent]:
    return [e for e in events if e.type is type_]


def escalation_notices(events: list[CloudEvent]) -> list[tuple[int, int, str]]:
    """(level, generation, role) of each escalation notice (not reminder re-notices), in order."""
    return [
        (e.data["level"], e.data["generation"], e.data["recipient"]["role"])
        for e in of_type(events, EventType.NOTIFICATION_REQUESTED)
        if not e.data["reason"].startswith("overdue reminder")
    ]
