"""Helpers for the audit service tests: the app on the real stack, tokens, and an incident's events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI

from audit.chain import canonical_event_bytes
from audit.config import AuditSettings
from audit.main import create_app
from audit.store import append, update_projection
from common.events import CloudEvent, new_event
from common.tokens import issue_person_token
from common.topics import EventType

PUPIL_NAME = "Alice Pupilname"
CRIME_REFERENCE = "CEOP-2026-77120"  # opens the case: for the people who need pupil details only
PUPIL_UPN = "A123456789012"
T0 = datetime(2026, 1, 12, 9, 0, tzinfo=UTC)


def audit_settings(isolation: str, stack: Any, tmp: Path, **extra: Any) -> AuditSettings:
    return AuditSettings(
        db_schema=f"{isolation}_audit", database_url=stack.admin_dsn, kafka_bootstrap_servers=stack.bootstrap,
        topic_prefix=f"{isolation}.", outbox_poll_seconds=0.2, signing_key_file=tmp / "key" / "signing.pem",
        checkpoint_dir=tmp / "checkpoints", checkpoint_interval_seconds=extra.pop("checkpoint_interval_seconds", 3600),
        **extra,
    )


@asynccontextmanager
async def running(settings: AuditSettings, *, consume: bool = False
                  ) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan; without `consume` its Kafka consumer is left out (tests that append directly)."""
    app = create_app(settings)
    if not consume:
        app.state.runtime.spec.raw_handlers = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://audit") as client:
            yield app, client


def bearer(settings: AuditSettings, role: str, school: str, person: str = "person-1") -> dict[str, str]:
    token = issue_person_token(settings.token_secret, person_id=person, role=role, school_id=school,
                               ttl=timedelta(hours=1))
    return {"Authorization": f"Bearer {token}"}


def incident_events(school: str, incident: str, *, minutes_to_ack: int = 7) -> list[CloudEvent]:
    """One incident's life: reported, triaged, DSL told by SMS, delivered, escalated, acknowledged, referred."""
    n = 0

    def ev(kind: EventType, data: dict[str, Any], at: datetime, caused_by: CloudEvent | None = None) -> CloudEvent:
        nonlocal n
        n += 1
        return new_event(kind, source="tests", subject=incident, schoolid=school, data=data, caused_by=caused_by,
                         clock=lambda: at, event_id=f"{incident}-e{n}")

    reported = ev(EventType.INCIDENT_REPORTED, {
        "incident_id": incident, "reference": f"OSI-{incident[-4:]}", "integration_id": "cpoms",
        "report": {
            "school_id": school, "reporter": {"role": "class teacher"}, "occurred_at": T0.isoformat(),
            "where": "ICT suite", "category": "online_grooming", "risk_area": "contact",
            "subjects": [{"kind": "pupil", "identifier": PUPIL_UPN, "name": PUPIL_NAME, "year_group": "Year 6"}],
            "description": f"{PUPIL_NAME} was messaged by an adult", "child_at_immediate_risk": False,
        },
    }, T0)
    triaged = ev(EventType.INCIDENT_TRIAGED, {
        "incident_id": incident, "reference": "OSI-1", "incident_class": "illegal", "urgency": "immediate",
        "risk_area": "contact", "reasons": [], "reminders": [], "policy_version": "p1", "chain": [],
    }, T0 + timedelta(seconds=1), reported)
    told = ev(EventType.NOTIFICATION_REQUESTED, {
        "notification_id": f"{incident}-n1", "incident_id": incident, "reference": "OSI-1", "school_id": school,
        "school_name": "Test School", "incident_class": "illegal", "urgency": "immediate", "level": 0,
        "generation": 1, "recipient": {"role": "dsl", "name": "Dee Esel",
                                       "channels": [{"kind": "sms", "address": "+447700900001"}]},
        "reminders": [], "reason": "first notice",
    }, T0 + timedelta(seconds=2), triaged)
    delivered = ev(EventType.NOTIFICATION_DELIVERED, {
        "notification_id": f"{incident}-n1", "incident_id": incident, "recipient_role": "dsl", "channel": "sms",
        "provider_id": "x1", "attempts": 1,
    }, T0 + timedelta(seconds=3), told)
    escalated = ev(EventType.INCIDENT_ESCALATED, {
        "incident_id": incident, "from_level": 0, "to_level": 1, "repeat": 0, "generation": 2, "reason": "overdue",
    }, T0 + timedelta(minutes=5), told)
    acked = ev(EventType.INCIDENT_ACKNOWLEDGED, {
        "incident_id": incident, "by": {"role": "dsl", "name": "Dee Esel"},
        "at": (T0 + timedelta(minutes=minutes_to_ack)).isoformat(), "via": "link",
        "notification_id": f"{incident}-n1",
    }, T0 + timedelta(minutes=minutes_to_ack), told)
    referred = ev(EventType.INCIDENT_ACTION_RECORDED, {
        "action_id": f"{incident}-a1", "incident_id": incident, "action": "referral_made",
        "by": {"role": "dsl"}, "at": (T0 + timedelta(minutes=9)).isoformat(), "agency": "ceop",
        "reference_number": CRIME_REFERENCE,
    }, T0 + timedelta(minutes=9), acked)
    return [reported, triaged, told, delivered, escalated, acked, referred]


async def log_events(pool: asyncpg.Pool, events: list[CloudEvent]) -> None:
    """What the consumer does with each event, without the broker: append, then the live projection."""
    async with pool.acquire() as conn:
        for event in events:
            async with conn.transaction():
                record = await append(conn, event.schoolid, event_id=event.id, topic=event.topic.value,
                                      event=canonical_event_bytes(event))
                assert record is not None
                await update_projection(conn, record)
