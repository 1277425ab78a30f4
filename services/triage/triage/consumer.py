"""Triage's event handlers: a report is classified, planned, stored and its first notices requested;
acknowledgements, actions and failed notices move the stored escalation on. Each runs in the consumer's
transaction (inbox + outbox), so an event handled twice has one effect."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

import structlog

from common.consumer import Handler
from common.contracts import (
    ActionKind,
    Agency,
    ChannelAddress,
    IncidentAcknowledged,
    IncidentActionRecorded,
    IncidentReported,
    NotificationFailed,
    Recipient,
    Reminder,
)
from common.db import Connection
from common.events import CloudEvent
from common.outbox import enqueue
from common.topics import EventType, Topic
from triage.chain import next_step
from triage.classify import classify
from triage.escalation import plan_escalation, reminders_closed_by
from triage.policy import PolicyBook, SchoolPolicy
from triage.state import (
    IncidentState,
    apply_step,
    derived_id,
    event_for,
    lock_incident,
    request_notices,
)

log = structlog.get_logger(__name__)

# Reminders an action can close: only these can be overdue and re-notify their owner. A standing
# instruction ("do not view, copy, share or delete") is in every notice but is never "overdue".
CLOSABLE: frozenset[str] = frozenset(
    code
    for action in ActionKind
    if action is not ActionKind.INCIDENT_CLOSED
    for agency in (None, *Agency)
    for code in reminders_closed_by(action, agency)
)

Clock = Callable[[], datetime]


class TriageHandlers:
    def __init__(self, policies: PolicyBook, clock: Clock, *, reminder_min_period: timedelta) -> None:
        self.policies = policies
        self.clock = clock
        self.reminder_min_period = reminder_min_period

    def handlers(self) -> Mapping[str, Handler]:
        return {
            Topic.INCIDENTS_REPORTED.value: self.on_reported,
            Topic.INCIDENTS_ACKNOWLEDGED.value: self.on_acknowledged,
            Topic.INCIDENTS_ACTIONS.value: self.on_action,
            Topic.NOTIFICATIONS_FAILED.value: self.on_notification_failed,
        }

    # --- incidents.reported -------------------------------------------------------------------------------

    async def on_reported(self, event: CloudEvent, conn: Connection) -> None:
        reported = IncidentReported.model_validate(event.data)
        report = reported.report
        policy = self.policies.for_school(report.school_id)
        now = self.clock()
        classification = classify(report)
        plan = plan_escalation(report, classification, policy, now)
        # RETURNING gives the new row's state, locked by the insert itself: no second look-up.
        inserted = await conn.fetchrow(
            "INSERT INTO incidents (id, reference, school_id, correlation_id, incident_class, urgency, risk_area, "
            "policy_version, chain, context, level, repeat, next_due_at, triaged_at, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb, $11, $12, $13, $14, $14) "
            "ON CONFLICT (id) DO NOTHING RETURNING generation, status, exhausted",
            reported.incident_id, reported.reference, report.school_id, event.correlationid,
            classification.incident_class.value, classification.urgency.value, classification.risk_area.value,
            plan.chain.policy_version, plan.chain.model_dump_json(), plan.context.model_dump_json(),
            plan.cursor.level, plan.cursor.repeat, plan.cursor.next_due_at, now,
        )
        if inserted is None:
            log.info("triage.report_already_triaged", incident_id=reported.incident_id)
            return
        await self._store_reminders(conn, reported.incident_id, plan.reminders, policy, now)
        incident = IncidentState(
            id=reported.incident_id, reference=reported.reference, school_id=report.school_id,
            correlation_id=event.correlationid, chain=plan.chain, context=plan.context,
            generation=inserted["generation"], status=inserted["status"], cursor=plan.cursor,
            exhausted=inserted["exhausted"],
        )
        triaged = plan.triaged(incident_id=reported.incident_id, reference=reported.reference)
        events = [_caused(event, incident, "triaged", triaged.model_dump(mode="json"), now)]
        events += await request_notices(conn, incident, plan.first_notices, repeat=0, now=now, caused_by=event)
        await enqueue(conn, events)
        await self._apply_early_signals(conn, reported.incident_id)

    async def _store_reminders(
        self, conn: Connection, incident_id: str, reminders: Sequence[Reminder], policy: SchoolPolicy, now: datetime
    ) -> None:
        """All of a new incident's reminders in one statement; a closable one with an owner gets its re-notice
        schedule."""
        rows = []
        for reminder in reminders:
            owner = _recipient(policy, reminder.owner_role)
            period = next_at = None
            if reminder.due_at is not None and owner is not None and reminder.code in CLOSABLE:
                next_at = max(reminder.due_at, now + self.reminder_min_period)
                period = max(reminder.due_at - now, self.reminder_min_period)
            rows.append((reminder.code, reminder.text, reminder.owner_role,
                         owner.model_dump_json() if owner else None, reminder.due_at,
                         period.total_seconds() if period else None, next_at))
        if not rows:
            return
        await conn.execute(
            "INSERT INTO reminders (incident_id, code, text, owner_role, owner, due_at, period_seconds, "
            "next_notify_at) SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::jsonb[], "
            "$6::timestamptz[], $7::float8[], $8::timestamptz[]) ON CONFLICT DO NOTHING",
            incident_id, *(list(column) for column in zip(*rows, strict=True)),
        )

    async def _apply_early_signals(self, conn: Connection, incident_id: str) -> None:
        rows = await conn.fetch(
            "DELETE FROM early_signals WHERE incident_id = $1 RETURNING topic, event::text AS event", incident_id
        )
        for row in sorted(rows, key=lambda r: r["topic"] == Topic.INCIDENTS_ACTIONS.value):
            signal = CloudEvent.model_validate_json(row["event"])
            await self.handlers()[row["topic"]](signal, conn)

    async def _early(self, conn: Connection, event: CloudEvent, topic: Topic, incident_id: str) -> None:
        """A signal for an incident not yet triaged: kept and applied when the report arrives."""
        await conn.execute(
            "INSERT INTO early_signals (event_id, incident_id, topic, event) VALUES ($1, $2, $3, $4::jsonb) "
            "ON CONFLICT DO NOTHING",
            event.id, incident_id, topic.value, event.model_dump_json(),
        )

    # --- incidents.acknowledged ---------------------------------------------------------------------------

    async def on_acknowledged(self, event: CloudEvent, conn: Connection) -> None:
        ack = IncidentAcknowledged.model_validate(event.data)
        incident = await lock_incident(conn, ack.incident_id)
        if incident is None:
            await self._early(conn, event, Topic.INCIDENTS_ACKNOWLEDGED, ack.incident_id)
            return
        if incident.status != "open":
            return
        # A new generation: every timer and notice carrying the old one is now stale.
        await conn.execute(
            "UPDATE incidents SET status = 'acknowledged', generation = generation + 1, next_due_at = NULL, "
            "acknowledged_at = $2, acknowledged_by = $3, updated_at = $4 WHERE id = $1",
            incident.id, ack.at, ack.by.role, self.clock(),
        )
        log.info("triage.acknowledged", incident_id=incident.id, by_role=ack.by.role)

    # --- incidents.actions --------------------------------------------------------------------------------

    async def on_action(self, event: CloudEvent, conn: Connection) -> None:
        action = IncidentActionRecorded.model_validate(event.data)
        incident = await lock_incident(conn, action.incident_id)
        if incident is None:
            await self._early(conn, event, Topic.INCIDENTS_ACTIONS, action.incident_id)
            return
        open_codes = [
            r["code"] for r in await conn.fetch(
                "SELECT code FROM reminders WHERE incident_id = $1 AND closed_at IS NULL", incident.id
            )
        ]
        closed = reminders_closed_by(action.action, action.agency, open_codes) & set(open_codes)
        if closed:
            await conn.execute(
                "UPDATE reminders SET closed_at = $3, closed_by = $4 WHERE incident_id = $1 AND code = ANY($2::text[]) "
                "AND closed_at IS NULL",
                incident.id, sorted(closed), action.at, action.action.value,
            )
        if action.action is ActionKind.INCIDENT_CLOSED and incident.status != "closed":
            await conn.execute(
                "UPDATE incidents SET status = 'closed', generation = generation + 1, next_due_at = NULL, "
                "closed_at = $2, updated_at = $3 WHERE id = $1",
                incident.id, action.at, self.clock(),
            )

    # --- notifications.failed -----------------------------------------------------------------------------

    async def on_notification_failed(self, event: CloudEvent, conn: Connection) -> None:
        """A notice that could not be delivered is an unacknowledged level: escalate now, if still current."""
        failed = NotificationFailed.model_validate(event.data)
        incident = await lock_incident(conn, failed.incident_id)
        if incident is None:
            return
        now = self.clock()
        sent = await conn.fetchrow(
            "UPDATE notifications SET failed_at = $2 WHERE notification_id = $1 RETURNING kind, level, generation",
            failed.notification_id, now,
        )
        kind = sent["kind"] if sent is not None else "escalation"
        current = (
            incident.status == "open"
            and kind == "escalation"
            and failed.generation == incident.generation
            and failed.level == incident.cursor.level
            and incident.cursor.level < incident.chain.top  # at the top the repeat timer carries on
            and incident.cursor.next_due_at is not None
        )
        if not current:
            log.info("triage.failed_notice_ignored", incident_id=incident.id, level=failed.level,
                     generation=failed.generation)
            return
        cursor = incident.cursor.model_copy(update={"next_due_at": now})
        step = next_step(incident.chain, cursor, now)
        reason = f"the notice to the {failed.recipient_role.replace('_', ' ')} could not be delivered"
        await apply_step(conn, incident, step, now, caused_by=event, reason=reason)


def _recipient(policy: SchoolPolicy, role: str) -> Recipient | None:
    contact = policy.contacts.get(role)
    if contact is None:
        return None
    return Recipient(
        role=role,
        name=contact.name,
        channels=[ChannelAddress(kind=c.kind, address=c.address) for c in contact.channels],
    )


def _caused(
    event: CloudEvent, incident: IncidentState, what: str, data: dict[str, object], now: datetime
) -> CloudEvent:
    return event_for(
        incident, EventType.INCIDENT_TRIAGED, dict(data), derived_id(what, incident.id, incident.generation), now, event
    )


__all__ = ["CLOSABLE", "TriageHandlers"]
