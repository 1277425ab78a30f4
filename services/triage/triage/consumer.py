"""Triage's event handlers: a report is classified, planned, stored and its first notices requested;
acknowledgements, actions and failed notices move the stored escalation on. Each runs in the consumer's
transaction (inbox + outbox), so an event handled twice has one effect. Reports come a poll's batch at a time
and are written set-wise (`triage.new_incidents`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

import structlog
from asyncpg import Record

from common.consumer import BatchedHandler, Handler
from common.contracts import (
    ActionKind,
    IncidentAcknowledged,
    IncidentActionRecorded,
    IncidentReported,
    NotificationFailed,
)
from common.db import Connection
from common.events import CloudEvent
from common.reminders import reminders_closed_by
from common.roles import in_chain, normalise_role
from common.topics import Topic
from triage.chain import next_step
from triage.classify import classify
from triage.escalation import plan_escalation
from triage.new_incidents import PlannedIncident, store_new_incidents
from triage.policy import PolicyBook, SchoolPolicy
from triage.state import IncidentState, apply_step, lock_incident

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]


class TriageHandlers:
    def __init__(self, policies: PolicyBook, clock: Clock, *, reminder_min_period: timedelta) -> None:
        self.policies = policies
        self.clock = clock
        self.reminder_min_period = reminder_min_period
        self._schools_without_policy: set[str] = set()

    def handlers(self) -> Mapping[str, Handler]:
        """Every topic triage consumes: reports a poll's batch at a time (a malformed one fails the batch, which
        the runner then re-runs one report at a time to dead-letter it alone), the others one event at a time."""
        return {
            Topic.INCIDENTS_REPORTED.value: BatchedHandler(self.triage_reports),
            Topic.INCIDENTS_ACKNOWLEDGED.value: self.on_acknowledged,
            Topic.INCIDENTS_ACTIONS.value: self.on_action,
            Topic.NOTIFICATIONS_FAILED.value: self.on_notification_failed,
        }

    # --- incidents.reported -------------------------------------------------------------------------------

    async def triage_reports(self, events: Sequence[CloudEvent], conn: Connection) -> None:
        """Classify and plan each report, then write the new incidents set-wise and apply any early signals."""
        planned = []
        # One instant for the batch, as it is committed at once; reports classed alike then share one plan.
        now = self.clock()
        for event in events:
            reported = IncidentReported.model_validate(event.data)
            report = reported.report
            policy = self._policy_for(report.school_id)
            classification = classify(report)
            plan = plan_escalation(report, classification, policy, now, reported_at=event.time)
            planned.append(PlannedIncident(event, reported, policy, classification, plan, now))
        stored = await store_new_incidents(conn, planned, reminder_min_period=self.reminder_min_period)
        if stored.early_signals:
            await self._apply_early_signals(conn, [incident.id for incident in stored.incidents], stored.early_signals)

    def _policy_for(self, school_id: str) -> SchoolPolicy:
        """The school's policy. A school without its own file gets the default, whose contacts are placeholders
        unless the operator edited them: said once per school, so that nobody assumes its people are told."""
        if school_id not in self.policies.schools and school_id not in self._schools_without_policy:
            self._schools_without_policy.add(school_id)
            log.warning("triage.school_without_policy", school=school_id,
                        detail="escalated with the default policy's contacts: add a policy file for this school")
        return self.policies.for_school(school_id)

    async def _apply_early_signals(self, conn: Connection, incident_ids: Sequence[str], rows: Sequence[Record]) -> None:
        """Signals that came before their report, taken from `early_signals`: applied per incident in batch order,
        acknowledgements before actions, each kind in the order they came."""
        by_incident: dict[str, list[Record]] = {}
        for row in rows:
            by_incident.setdefault(row["incident_id"], []).append(row)
        for incident_id in incident_ids:
            signals = by_incident.get(incident_id, [])
            for row in sorted(signals, key=lambda r: (r["topic"] == Topic.INCIDENTS_ACTIONS.value, r["received_at"])):
                signal = CloudEvent.model_validate_json(row["event"])
                await self.handlers()[row["topic"]](signal, conn)

    async def apply_stranded_signals(self, conn: Connection) -> int:
        """Early signals whose incident is stored, applied now (in the caller's transaction); returns how many.

        The report's transaction takes its incident's early signals as it stores the incident, which covers every
        signal committed before that statement. When triage runs as several members of its consumer group, the
        report and a signal for it can be handled at the same moment by two members (their topics' partitions are
        assigned apart): each transaction misses the other's uncommitted row, the signal is kept as early and the
        report's transaction does not see it. Such a signal is stranded, and this is what applies it."""
        rows = await conn.fetch(
            "DELETE FROM early_signals e USING incidents i WHERE e.incident_id = i.id "
            "RETURNING e.incident_id, e.topic, e.event::text AS event, e.received_at"
        )
        if rows:
            incident_ids = list(dict.fromkeys(r["incident_id"] for r in rows))
            log.info("triage.stranded_signals_applied", count=len(rows), incidents=len(incident_ids))
            await self._apply_early_signals(conn, incident_ids, rows)
        return len(rows)

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
        if not _in_chain(incident, ack.by.role):
            log.warning("triage.acknowledgement_outside_chain", incident_id=incident.id, by_role=ack.by.role)
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
        if not _in_chain(incident, action.by.role):
            log.warning("triage.action_outside_chain", incident_id=incident.id, by_role=action.by.role,
                        action=action.action.value)
            return
        open_codes = [
            r["code"] for r in await conn.fetch(
                "SELECT code FROM reminders WHERE incident_id = $1 AND closed_at IS NULL", incident.id
            )
        ]
        closed = reminders_closed_by(action.action, action.agency, open_codes, action.reminder) & set(open_codes)
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


__all__ = ["TriageHandlers"]


def _in_chain(incident: IncidentState, role: str) -> bool:
    """Whether the role is one the incident's chain tells. Only they stop its escalation: not a governor, and not
    a headteacher who is the subject of the report (the chain has the chair of governors instead). Intake refuses
    the others once it knows the chain; this holds for what it accepted before it did."""
    return in_chain(role, {normalise_role(r) for level in incident.chain.levels for r in level.roles})
