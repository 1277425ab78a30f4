"""Intake's tables: the statements the HTTP side and the status projection share."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from common.contracts import IncidentAcknowledged, IncidentActionRecorded
from common.db import Connection
from common.events import CloudEvent
from common.outbox import execute_and_enqueue
from intake.models import STATUS_ORDER, IncidentStatus

INCIDENT_COLUMNS = (
    "id, reference, school_id, integration_id, correlation_id, category, risk_area, child_at_immediate_risk, "
    "report, status, incident_class, urgency, escalation_level, received_at, updated_at, closed_at"
)


_INSERT_INCIDENT = (
    "INSERT INTO incidents (id, reference, school_id, integration_id, correlation_id, category, risk_area,"
    " child_at_immediate_risk, occurred_at, report, received_at, updated_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $11)"
)


async def insert_incident(conn: Connection, row: dict[str, Any], event: CloudEvent) -> None:
    """The incident and its `incidents.reported` event, in one statement (atomic even outside a transaction)."""
    await execute_and_enqueue(conn, _INSERT_INCIDENT, [
        row["id"], row["reference"], row["school_id"], row["integration_id"], row["correlation_id"],
        row["category"], row["risk_area"], row["child_at_immediate_risk"], row["occurred_at"],
        json.dumps(row["report"]), row["received_at"],
    ], [event])


async def find_incident(
    conn: Connection, incident_id: UUID, *, schools: list[str], integration_id: str | None = None
) -> asyncpg.Record | None:
    """The incident if it is within this scope: scope is part of the lookup, so others' ids look unknown."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {INCIDENT_COLUMNS} FROM incidents"  # noqa: S608 - constant column list
        " WHERE id = $1 AND school_id = ANY($2::text[]) AND ($3::text IS NULL OR integration_id = $3)",
        incident_id, schools, integration_id,
    )
    return row


async def advance(conn: Connection, incident_id: UUID, status: IncidentStatus, at: datetime) -> None:
    """Move the status forward (never back: events of different topics may arrive in any order)."""
    await conn.execute(
        "UPDATE incidents SET status = $2, updated_at = $3,"
        " closed_at = CASE WHEN $2 = 'closed' THEN coalesce(closed_at, $3) ELSE closed_at END"
        " WHERE id = $1 AND array_position($4::text[], status) < array_position($4::text[], $2)",
        incident_id, status.value, at, STATUS_ORDER,
    )


async def insert_acknowledgement(
    conn: Connection, ack_id: UUID, event_id: str, ack: IncidentAcknowledged
) -> bool:
    """Record an acknowledgement once per event; False if the incident is unknown or it is a repeat."""
    inserted = await conn.fetchval(
        "INSERT INTO acknowledgements (id, incident_id, event_id, by_role, by_name, person_id, via,"
        " notification_id, at)"
        " SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE EXISTS (SELECT 1 FROM incidents WHERE id = $2)"
        " ON CONFLICT DO NOTHING RETURNING 1",
        ack_id, UUID(ack.incident_id), event_id, ack.by.role, ack.by.name, ack.by.person_id,
        ack.via, ack.notification_id, ack.at,
    )
    return inserted is not None


async def insert_action(conn: Connection, action: IncidentActionRecorded) -> bool:
    details = action.model_dump(
        mode="json", exclude_none=True, include={"agency", "reference_number", "isolated_from_network", "reason",
                                                "outcome"},
    )
    inserted = await conn.fetchval(
        "INSERT INTO incident_actions (id, incident_id, action, by_role, by_name, person_id, at, details)"
        " SELECT $1, $2, $3, $4, $5, $6, $7, $8::jsonb WHERE EXISTS (SELECT 1 FROM incidents WHERE id = $2)"
        " ON CONFLICT DO NOTHING RETURNING 1",
        UUID(action.action_id), UUID(action.incident_id), action.action.value, action.by.role, action.by.name,
        action.by.person_id, action.at, json.dumps(details),
    )
    return inserted is not None


async def acknowledgements(conn: Connection, incident_id: UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT id, by_role, by_name, via, at FROM acknowledgements WHERE incident_id = $1 ORDER BY at, id",
        incident_id,
    )
    return rows


async def actions(conn: Connection, incident_id: UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT id, action, by_role, by_name, at, details FROM incident_actions WHERE incident_id = $1"
        " ORDER BY at, id",
        incident_id,
    )
    return rows


async def notifications(conn: Connection, incident_id: UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT notification_id, recipient_role, level, state, channel, updated_at FROM incident_notifications"
        " WHERE incident_id = $1 ORDER BY updated_at, notification_id",
        incident_id,
    )
    return rows
