"""Intake's tables: the statements the HTTP side and the status projection share."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from common.contracts import ActionKind, IncidentAcknowledged, IncidentActionRecorded
from common.db import Connection
from common.events import CloudEvent
from common.outbox import execute_and_enqueue
from common.roles import in_chain, normalise_role
from intake.models import STATUS_ORDER, IncidentAccepted, IncidentStatus

INCIDENT_COLUMNS = (
    "id, reference, school_id, integration_id, correlation_id, category, risk_area, child_at_immediate_risk, "
    "report, status, incident_class, urgency, escalation_level, received_at, updated_at, closed_at, chain_roles,"
    " reminder_codes"
)


@dataclass(frozen=True)
class NewIncident:
    """A report ready to be stored: its row, its `incidents.reported` event and the 202 answer it gets."""

    id: UUID
    reference: str
    school_id: str
    integration_id: str
    category: str
    risk_area: str
    child_at_immediate_risk: bool
    occurred_at: datetime
    report_json: str
    received_at: datetime
    event: CloudEvent
    accepted: IncidentAccepted


_INSERT_INCIDENTS = (
    "INSERT INTO incidents (id, reference, school_id, integration_id, correlation_id, category, risk_area,"
    " child_at_immediate_risk, occurred_at, report, received_at, updated_at)"
    " SELECT id, reference, school_id, integration_id, correlation_id, category, risk_area,"
    " child_at_immediate_risk, occurred_at, report::jsonb, received_at, received_at"
    " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],"
    " $8::boolean[], $9::timestamptz[], $10::text[], $11::timestamptz[]) AS r(id, reference, school_id,"
    " integration_id, correlation_id, category, risk_area, child_at_immediate_risk, occurred_at, report,"
    " received_at)"
)


async def insert_incidents(conn: Connection, incidents: Sequence[NewIncident]) -> None:
    """Incidents and their `incidents.reported` events, in one statement (atomic even outside a transaction)."""
    await execute_and_enqueue(conn, _INSERT_INCIDENTS, [
        [i.id for i in incidents], [i.reference for i in incidents], [i.school_id for i in incidents],
        [i.integration_id for i in incidents], [i.event.correlationid for i in incidents],
        [i.category for i in incidents], [i.risk_area for i in incidents],
        [i.child_at_immediate_risk for i in incidents], [i.occurred_at for i in incidents],
        [i.report_json for i in incidents], [i.received_at for i in incidents],
    ], [i.event for i in incidents])


@dataclass(frozen=True)
class Claim:
    """A request's Idempotency-Key: per integration or person (`namespace`), with the hash of what was asked."""

    namespace: str
    key: str
    digest: str


@dataclass(frozen=True)
class EarlierAnswer:
    request_hash: str
    response: str  # the JSON answer the first request got


async def claim_idempotency_keys(
    conn: Connection, claims: Sequence[tuple[Claim, str]], status_code: int, now: datetime
) -> dict[tuple[str, str], EarlierAnswer | None]:
    """Claim each key for its request (with the answer it will get), in the caller's transaction. Returns, per
    (namespace, key), None if this request now holds it, else the earlier request's answer. A key claimed by a
    transaction still open waits for its commit. Keys are claimed in sorted order, so two writers claiming
    overlapping keys cannot deadlock."""
    ordered = sorted(claims, key=lambda c: (c[0].namespace, c[0].key))
    claimed = await conn.fetch(
        "INSERT INTO idempotency_keys (integration_id, key, request_hash, status_code, response, created_at)"
        " SELECT ns, key, digest, $5, response::jsonb, $6"
        " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS c(ns, key, digest, response)"
        " ON CONFLICT DO NOTHING RETURNING integration_id, key",
        [c.namespace for c, _ in ordered], [c.key for c, _ in ordered], [c.digest for c, _ in ordered],
        [answer for _, answer in ordered], status_code, now,
    )
    result: dict[tuple[str, str], EarlierAnswer | None] = {(r["integration_id"], r["key"]): None for r in claimed}
    others = [c for c, _ in ordered if (c.namespace, c.key) not in result]
    if others:
        rows = await conn.fetch(
            "SELECT integration_id, key, request_hash, response::text AS response FROM idempotency_keys"
            " WHERE (integration_id, key) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
            [c.namespace for c in others], [c.key for c in others],
        )
        result.update({(r["integration_id"], r["key"]): EarlierAnswer(r["request_hash"], r["response"])
                       for r in rows})
    return result


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


def forward_to(status: IncidentStatus) -> str:
    """SQL for an incidents row's status moved forward to `status`, never back (a constant of the code, not input)."""
    order = ", ".join(f"'{s}'" for s in STATUS_ORDER)
    return (
        f"CASE WHEN array_position(ARRAY[{order}], status) < array_position(ARRAY[{order}], '{status.value}')"
        f" THEN '{status.value}' ELSE status END"
    )


async def advance(
    conn: Connection, incident_id: UUID, status: IncidentStatus, at: datetime, *, by_role: str | None = None
) -> None:
    """Move the status forward (never back: events of different topics may arrive in any order). An
    acknowledgement or action (`by_role`) moves it only if its role is in the chain, or the chain is not known yet."""
    await conn.execute(
        "UPDATE incidents SET status = $2, updated_at = $3,"
        " closed_at = CASE WHEN $2 = 'closed' THEN coalesce(closed_at, $3) ELSE closed_at END"
        " WHERE id = $1 AND array_position($4::text[], status) < array_position($4::text[], $2)"
        " AND ($5::text IS NULL OR chain_roles IS NULL OR $5 = ANY(chain_roles))",
        incident_id, status.value, at, STATUS_ORDER, normalise_role(by_role) if by_role is not None else None,
    )


async def recount_signals(conn: Connection, incidents: Sequence[UUID]) -> list[UUID]:
    """The status of incidents whose chain has just become known, counting only the acknowledgements and actions of
    roles in it: one accepted before (the credentials alone decided then) from someone outside the chain stops no
    escalation in triage, so it must not show the incident as acknowledged or closed either. Returns the incidents
    whose status went back."""
    if not incidents:
        return []
    rank = STATUS_ORDER.index
    was: dict[UUID, str] = {}
    counted: dict[UUID, str] = {}
    for r in await conn.fetch(_SIGNALS_OF, list(incidents)):
        incident = r["incident_id"]
        was[incident] = r["status"]
        status = counted.setdefault(incident, (IncidentStatus.ESCALATED if r["escalation_level"] is not None
                                               else IncidentStatus.TRIAGED).value)
        # none known (an empty chain): the credentials decide, as `advance` has it
        if r["by_role"] is None or not in_chain(r["by_role"], r["chain_roles"]):
            continue
        reached = (IncidentStatus.ACKNOWLEDGED if r["action"] is None
                   else IncidentStatus.CLOSED if r["action"] == ActionKind.INCIDENT_CLOSED
                   else IncidentStatus.ACTIONS_RECORDED)
        counted[incident] = max(status, reached.value, key=rank)
    back = [(incident, status) for incident, status in counted.items() if rank(status) < rank(was[incident])]
    if back:
        await conn.execute(
            "UPDATE incidents SET status = u.status, closed_at = CASE WHEN u.status = 'closed' THEN closed_at END"
            " FROM unnest($1::uuid[], $2::text[]) AS u(id, status) WHERE incidents.id = u.id",
            [i for i, _ in back], [s for _, s in back],
        )
    return [i for i, _ in back]


# Each incident (whose status an acknowledgement or action moved) with each of its signals' roles and actions.
_SIGNALS_OF = (
    "SELECT i.id AS incident_id, i.status, i.chain_roles, i.escalation_level, s.by_role, s.action"
    " FROM incidents i LEFT JOIN ("
    "  SELECT incident_id, by_role, NULL::text AS action FROM acknowledgements WHERE incident_id = ANY($1::uuid[])"
    "  UNION ALL SELECT incident_id, by_role, action FROM incident_actions WHERE incident_id = ANY($1::uuid[])"
    " ) s ON s.incident_id = i.id WHERE i.id = ANY($1::uuid[])"
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


# What an action records beyond its kind, who and when (the incident page shows it as the action's details).
ACTION_DETAILS = frozenset({"agency", "reference_number", "isolated_from_network", "reason", "outcome", "reminder"})


async def insert_action(conn: Connection, action: IncidentActionRecorded) -> bool:
    details = action.model_dump(mode="json", exclude_none=True, include=set(ACTION_DETAILS))
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
