"""The escalation timers: due rows in PostgreSQL, claimed with FOR UPDATE SKIP LOCKED.

`fire_due(now)` is one pass: it counts timers overdue beyond the grace period (a metric, 0 when healthy),
then claims due incidents a batch at a time, re-checks each under its row lock (still open, the cursor's
time really passed; the generation is the one read under the lock, so a stale timer cannot send), moves the
cursor and enqueues `incidents.escalated` and the next level's notices in the same transaction. Overdue
reminders re-notify their owner once per due period the same way. Two processes can run it at once: a row
one of them holds is skipped by the other, and a committed row is no longer due.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg
import structlog

from common.aio import sleep_unless_stopped
from common.contracts import Recipient, Reminder
from triage.chain import TimerOutcome, next_step
from triage.state import INCIDENT_COLUMNS, DueReminder, IncidentState, apply_step, notify_overdue_reminder

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
PoolSource = Callable[[], asyncpg.Pool]


@dataclass
class FireReport:
    """What one `fire_due` pass did."""

    escalated: int = 0
    repeated: int = 0
    exhausted: int = 0
    reminders: int = 0
    overdue_beyond_grace: int = 0
    incidents: list[str] = field(default_factory=list)

    @property
    def fired(self) -> int:
        return self.escalated + self.repeated + self.exhausted


@dataclass
class TimerMetrics:
    fired_total: int = 0
    reminders_total: int = 0
    overdue_beyond_grace: int = 0
    overdue_beyond_grace_total: int = 0

    def as_dict(self) -> dict[str, float]:
        return {
            "timers_fired_total": self.fired_total,
            "reminders_renotified_total": self.reminders_total,
            "timers_overdue_beyond_grace": self.overdue_beyond_grace,
            "timers_overdue_beyond_grace_total": self.overdue_beyond_grace_total,
        }


class Timers:
    def __init__(
        self, pool: PoolSource, clock: Clock, *, batch: int = 100, grace: timedelta = timedelta(seconds=60),
        poll_seconds: float = 1.0,
    ) -> None:
        self._pool = pool
        self.clock = clock
        self.batch = batch
        self.grace = grace
        self.poll_seconds = poll_seconds
        self.metrics = TimerMetrics()

    async def fire_due(self, now: datetime | None = None) -> FireReport:
        now = now or self.clock()
        report = FireReport()
        pool = self._pool()
        async with pool.acquire() as conn:
            report.overdue_beyond_grace = int(await conn.fetchval(
                "SELECT (SELECT count(*) FROM incidents WHERE status = 'open' AND next_due_at < $1) + "
                "(SELECT count(*) FROM reminders r JOIN incidents i ON i.id = r.incident_id "
                " WHERE i.status <> 'closed' AND r.closed_at IS NULL AND r.next_notify_at < $1)",
                now - self.grace,
            ))
        self.metrics.overdue_beyond_grace = report.overdue_beyond_grace
        self.metrics.overdue_beyond_grace_total += report.overdue_beyond_grace
        if report.overdue_beyond_grace:
            log.warning("triage.timers_overdue", count=report.overdue_beyond_grace, grace=str(self.grace))
        while await self._escalate_batch(pool, now, report) == self.batch:
            pass
        while await self._remind_batch(pool, now, report) == self.batch:
            pass
        self.metrics.fired_total += report.fired
        self.metrics.reminders_total += report.reminders
        return report

    async def _escalate_batch(self, pool: asyncpg.Pool, now: datetime, report: FireReport) -> int:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE status = 'open' AND next_due_at <= $1 "  # noqa: S608
                "ORDER BY next_due_at LIMIT $2 FOR UPDATE SKIP LOCKED",
                now, self.batch,
            )
            for row in rows:
                incident = IncidentState.from_row(row)
                # Re-checked under the row lock: open, and due (the generation is the one we hold).
                if incident.status != "open" or incident.cursor.next_due_at is None:
                    continue
                step = next_step(incident.chain, incident.cursor, now)
                if step.outcome is TimerOutcome.NOT_YET_DUE:
                    continue
                await apply_step(conn, incident, step, now)
                report.incidents.append(incident.id)
                if step.outcome is TimerOutcome.ESCALATED:
                    report.escalated += 1
                elif step.outcome is TimerOutcome.REPEATED:
                    report.repeated += 1
                else:
                    report.exhausted += 1
        return len(rows)

    async def _remind_batch(self, pool: asyncpg.Pool, now: datetime, report: FireReport) -> int:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT r.code, r.text, r.owner_role, r.owner::text AS owner, r.due_at, r.period_seconds, "
                "r.next_notify_at, r.notified_count, r.incident_id FROM reminders r "
                "JOIN incidents i ON i.id = r.incident_id "
                "WHERE i.status <> 'closed' AND r.closed_at IS NULL AND r.next_notify_at <= $1 "
                "ORDER BY r.next_notify_at LIMIT $2 FOR UPDATE OF r SKIP LOCKED",
                now, self.batch,
            )
            for row in rows:
                incident = IncidentState.from_row(await conn.fetchrow(
                    f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1",  # noqa: S608
                    row["incident_id"],
                ))
                if incident.status == "closed":
                    continue
                due = DueReminder(
                    incident=incident,
                    code=row["code"],
                    reminder=Reminder(code=row["code"], text=row["text"], owner_role=row["owner_role"],
                                      due_at=row["due_at"]),
                    owner=Recipient.model_validate_json(row["owner"]),
                    notified_count=row["notified_count"],
                    next_notify_at=row["next_notify_at"],
                    period=timedelta(seconds=row["period_seconds"]),
                )
                await notify_overdue_reminder(conn, due, now)
                report.reminders += 1
        return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        """The background loop: a pass every `poll_seconds`; an error is logged and the next pass retries."""
        while not stop.is_set():
            try:
                await self.fire_due(self.clock())
            except Exception as exc:  # noqa: BLE001 - the loop must outlive database outages
                log.warning("triage.timers_failed", error=str(exc) or type(exc).__name__)
            await sleep_unless_stopped(stop, self.poll_seconds)
