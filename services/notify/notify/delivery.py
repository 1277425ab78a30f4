"""The delivery loop: claim due deliveries, send them on the contact's channels in order, record the outcome.

One pass (`deliver_due(now)`) is three short steps, and the clock is a parameter so tests need not sleep:
1. claim: in one transaction, `SELECT ... FOR UPDATE SKIP LOCKED` the rows that are due; a row whose incident
   was acknowledged after it was requested is withheld (`notifications.withheld`), unless illegal-class; the throttle
   decides which fresh ones go now (alone or grouped into one digest per address) and which are held
   until their window closes; the ones going now are marked 'sending' with a lease;
2. send, outside any transaction, every batch side by side;
3. record, one transaction per batch straight after its send: 'sent' and `notifications.delivered`;
   or, after a retryable failure, the next attempt time (a row, so a restart resumes the backoff); or,
   after a permanent failure or exhausted retries, the next channel; with none left, 'failed' and
   `notifications.failed`. Events leave only through the outbox. A digest's notices share one decision, so their
   retry, fallback or resend after a lease goes out as one message again, with the same id (`_together_again`).

A send whose outcome was never recorded (the process died between the provider's acceptance and the
commit) is sent again once its lease expires; every message carries an id derived from its notification
ids (email Message-ID, webhook-id, Notify reference), so the receiver can drop the repeat.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from common.contracts import (
    ChannelAddress,
    ChannelKind,
    IncidentClass,
    NoticePurpose,
    NotificationDelivered,
    NotificationFailed,
    NotificationRequested,
    NotificationWithheld,
)
from common.db import TRANSIENT_ERRORS, Connection
from common.events import Clock, CloudEvent, utc_now
from common.outbox import enqueue, execute_and_enqueue_returned
from common.tokens import issue_ack_token
from common.topics import EventType
from common.woken_loop import run_woken_passes
from notify import throttle
from notify.channels.base import (
    Channel,
    DeliveryReceipt,
    OutgoingMessage,
    PermanentDeliveryError,
    RetryableDeliveryError,
    message_id_for,
)
from notify.messages import Links, ack_url, render_digest
from notify.retry import BackoffPolicy, GiveUp, RetryAt

log = structlog.get_logger(__name__)

EVENT_NAMESPACE = uuid.UUID("a3c1d7e2-54b8-4f0e-9c61-8d2e7f3b9a14")
SOURCE = "urn:online-safety:notify"

_CLAIM = (
    "SELECT d.notification_id, d.event_id, d.correlation_id, d.request, d.state, d.channel_index, d.attempts,"
    " d.total_attempts, d.received_at, d.errors, d.requested_at, d.batch_key, a.acknowledged_at,"
    # Whether whoever acknowledged is someone this incident's chain told: asked only of acknowledged incidents.
    " CASE WHEN a.incident_id IS NULL THEN false ELSE EXISTS (SELECT 1 FROM deliveries t"
    "  WHERE t.incident_id = d.incident_id AND t.request->'recipient'->>'role' = a.by_role) END AS ack_by_recipient"
    " FROM deliveries d LEFT JOIN acknowledgements a ON a.incident_id = d.incident_id"
    " WHERE d.state IN ('pending', 'held', 'sending') AND d.next_attempt_at <= $1"
    # Most urgent first: after an outage, a new illegal-class notice does not wait behind a backlog of retries.
    " ORDER BY CASE d.request->>'urgency' WHEN 'immediate' THEN 0 WHEN 'high' THEN 1 ELSE 2 END, d.next_attempt_at"
    " LIMIT $2 FOR UPDATE OF d SKIP LOCKED"
)

# The claimed rows go 'sending' under a lease, each with the message it goes in if that carries several, and their
# addresses' last send time moves on: one statement.
_MARK_SENDING = (
    "WITH sending AS (UPDATE deliveries SET state = 'sending', next_attempt_at = $2, updated_at = $3,"
    " batch_key = u.key FROM unnest($1::text[], $5::text[]) AS u(id, key) WHERE notification_id = u.id)"
    " INSERT INTO address_sends (address_key, last_sent_at) SELECT k, $3 FROM unnest($4::text[]) k"
    " ON CONFLICT (address_key) DO UPDATE SET last_sent_at ="
    " GREATEST(address_sends.last_sent_at, EXCLUDED.last_sent_at)"
)

# A send recorded: $2..$5 are the channel, provider id, message id and time.
_MARK_SENT = (
    "UPDATE deliveries d SET state = 'sent', sent_channel = $2, provider_id = $3, message_id = $4,"
    " attempts = d.attempts + 1, total_attempts = d.total_attempts + 1, finished_at = $5, updated_at = $5,"
    " last_error = NULL"
)
# Every row of the batch still as it was claimed (not finished, its attempts unchanged), with its delivered event
# id returned (common.outbox.execute_and_enqueue_returned writes those events).
_RECORD_SENT = (
    _MARK_SENT + " FROM unnest($1::text[], $6::text[], $7::int[]) AS u(id, event_id, claimed_attempts)"
    " WHERE d.notification_id = u.id AND d.total_attempts = u.claimed_attempts AND d.state NOT IN ('sent', 'failed')"
    " RETURNING u.event_id"
)
# The rows somebody else changed since the claim, as they now stand (finished ones are left alone).
_RECORD_SENT_AS_THEY_STAND = (
    _MARK_SENT + " WHERE d.notification_id = ANY($1::text[]) AND d.state NOT IN ('sent', 'failed')"
    " RETURNING d.notification_id, d.total_attempts"
)


@dataclass
class _Item:
    notification_id: str
    event_id: str
    correlation_id: str
    request: NotificationRequested
    state: str
    channel_index: int
    attempts: int
    total_attempts: int
    received_at: datetime
    errors: list[str]
    requested_at: datetime | None = None
    batch_key: str | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by_recipient: bool = False

    @classmethod
    def from_row(cls, row: asyncpg.Record | Mapping[str, Any]) -> _Item:
        return cls(
            row["notification_id"], row["event_id"], row["correlation_id"],
            NotificationRequested.model_validate_json(row["request"]), row["state"], row["channel_index"],
            row["attempts"], row["total_attempts"], row["received_at"], list(json.loads(row["errors"])),
            row["requested_at"], row["batch_key"], row["acknowledged_at"], row["ack_by_recipient"],
        )

    @property
    def fresh(self) -> bool:
        """Never tried yet, on its first channel: the throttle may group or hold it."""
        return self.state in ("pending", "held") and self.attempts == 0 and self.channel_index == 0

    @property
    def overtaken_by_acknowledgement(self) -> bool:
        """The incident was acknowledged, so this notice is moot; illegal-class notices always go (the headteacher
        and the DSL must both know). A chain notice (escalation purpose) is moot however late it was requested, if
        someone the chain told acknowledged: triage requested it before it read the acknowledgement. An overdue
        reminder's re-notice always goes: an acknowledgement does not do what it asks. A request from before the
        purpose existed is moot if requested before the acknowledgement (unknown request time: it goes)."""
        if self.acknowledged_at is None or self.request.incident_class is IncidentClass.ILLEGAL:
            return False
        purpose = self.request.purpose
        if purpose is NoticePurpose.REMINDER:
            return False
        requested_before = self.requested_at is not None and self.requested_at <= self.acknowledged_at
        return requested_before or (purpose is NoticePurpose.ESCALATION and self.acknowledged_by_recipient)


@dataclass(frozen=True)
class _Batch:
    kind: ChannelKind
    address: str
    items: tuple[_Item, ...]

    @property
    def key(self) -> str | None:
        """The id of the message carrying several notices (a digest), kept on their rows; None for one notice."""
        return message_id_for([i.notification_id for i in self.items]) if len(self.items) > 1 else None


@dataclass
class DeliveryConfig:
    ack_secret: str
    public_base_url: str
    ack_ttl: timedelta = timedelta(hours=72)
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    throttle: throttle.ThrottlePolicy = field(default_factory=throttle.ThrottlePolicy)
    lease: timedelta = timedelta(seconds=120)
    batch_size: int = 100
    concurrency: int = 20
    poll_seconds: float = 1.0
    wake_channel: str | None = None  # LISTEN/NOTIFY channel: a new request wakes the loop at its commit


@dataclass
class PassResult:
    sent: int = 0
    retried: int = 0
    fell_back: int = 0
    failed: int = 0
    held: int = 0
    withheld: int = 0

    @property
    def claimed(self) -> int:
        return self.sent + self.retried + self.fell_back + self.failed + self.held + self.withheld


class Deliverer:
    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        channels: Mapping[ChannelKind, Channel],
        config: DeliveryConfig,
        *,
        rand: Callable[[], float] | None = None,
    ) -> None:
        self._pool = pool
        self._channels = dict(channels)
        self._config = config
        self._rand = rand
        self._limit = asyncio.Semaphore(max(1, config.concurrency))

    # ------------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event, clock: Clock = utc_now) -> None:
        async def one_pass() -> bool:
            return (await self.deliver_due(clock())).claimed > 0

        await run_woken_passes(
            stop, one_pass, pool=self._pool, channel=self._config.wake_channel,
            poll_seconds=self._config.poll_seconds, failure_event="notify.delivery_pass_failed",
        )

    async def aclose(self) -> None:
        """Close what the channels keep open (pooled SMTP connections) once nothing more will be sent."""
        for channel in self._channels.values():
            close = getattr(channel, "aclose", None)
            if close is not None:
                await close()

    async def deliver_due(self, now: datetime) -> PassResult:
        """Deliver everything due at `now`; a delivery moved to its next channel is tried in the same pass. Each
        round runs at its own time (`now` plus the time the pass has taken): its leases, retry times and events'
        times start when it does, not when a long pass began."""
        total = PassResult()
        started, round_now = time.monotonic(), now
        for _ in range(50):  # bounded: each round moves every claimed row on
            result = await self._one_round(round_now)
            round_now = now + timedelta(seconds=time.monotonic() - started)
            for name in ("sent", "retried", "fell_back", "failed", "held", "withheld"):
                setattr(total, name, getattr(total, name) + getattr(result, name))
            if result.fell_back == 0 and result.claimed < self._config.batch_size:
                break
        return total

    # ------------------------------------------------------------------ one round

    async def _one_round(self, now: datetime) -> PassResult:
        result = PassResult()
        batches = await self._claim(now, result)
        if not batches:
            return result
        outcomes = await asyncio.gather(*(self._send_and_record(b, now) for b in batches), return_exceptions=True)
        for batch, outcome in zip(batches, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                # Recording failed (database gone): the lease expires and the batch is sent again.
                log.error("notify.record_failed", error=str(outcome) or type(outcome).__name__,
                          error_type=type(outcome).__qualname__, notifications=len(batch.items))
                continue
            for name, n in outcome.items():
                setattr(result, name, getattr(result, name) + n)
        return result

    async def _claim(self, now: datetime, result: PassResult) -> list[_Batch]:
        cfg = self._config
        async with self._pool().acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM, now, cfg.batch_size)
            if not rows:
                return []
            items = [_Item.from_row(r) for r in rows]
            overtaken = [i for i in items if i.overtaken_by_acknowledgement]
            if overtaken:
                result.withheld += await self._record_withheld(conn, overtaken, now)
                items = [i for i in items if not i.overtaken_by_acknowledgement]
            by_id = {i.notification_id: i for i in items}
            fresh = [i for i in items if i.fresh]
            batches = _together_again([i for i in items if not i.fresh])
            pending = [
                throttle.Pending(i.request, i.request.recipient.channels[0], i.received_at) for i in fresh
            ]
            keys = {_key_text(throttle.address_key(p.channel)) for p in pending}
            last_sent = {
                _key_from_text(r["address_key"]): r["last_sent_at"]
                for r in await conn.fetch(
                    "SELECT address_key, last_sent_at FROM address_sends WHERE address_key = ANY($1::text[])",
                    sorted(keys),
                )
            } if keys else {}
            plan = throttle.plan(now, pending, policy=cfg.throttle, last_sent=last_sent)
            for b in plan.send_now:
                batches.append(
                    _Batch(b.channel.kind, b.channel.address,
                           tuple(by_id[p.request.notification_id] for p in b.items))
                )
            planned = {i.notification_id for b in batches for i in b.items}
            held = [(h.item.request.notification_id, h.until) for h in plan.held]
            # A fresh row the plan dropped (the same notification twice on one address) is sent alone.
            batches += [_single(i) for i in fresh if i.notification_id not in planned
                        and i.notification_id not in {n for n, _ in held}]
            if held:
                await conn.execute(
                    "UPDATE deliveries SET state = 'held', next_attempt_at = u.until, updated_at = $3"
                    " FROM unnest($1::text[], $2::timestamptz[]) AS u(id, until)"
                    " WHERE deliveries.notification_id = u.id",
                    [n for n, _ in held], [u for _, u in held], now,
                )
                result.held += len(held)
            sending = [i.notification_id for b in batches for i in b.items]
            batch_keys = [b.key for b in batches for _ in b.items]
            sent_keys = sorted({_key_text(throttle.address_key(_address(b))) for b in batches})
            await conn.execute(_MARK_SENDING, sending, now + cfg.lease, now, sent_keys, batch_keys)
        return batches

    async def _send_and_record(self, batch: _Batch, now: datetime) -> dict[str, int]:
        # The connection is taken before the send (no transaction is open during it), so that the outcome is
        # committed the moment the provider answers, never after waiting for a free connection.
        async with self._limit:
            outcome: DeliveryReceipt | Exception | None = None
            try:
                async with self._pool().acquire() as conn:
                    outcome = await self._send_catching(batch, now)
                    return await self._record(conn, batch, outcome, now)
            except TRANSIENT_ERRORS:
                if outcome is None:
                    raise  # nothing was sent: the lease brings the batch back
            # The provider has answered but the database went away before the outcome was written. Keep
            # trying while the lease runs, or the batch would be sent again: a second SMS in the night.
            return await self._record_before_the_lease_ends(batch, outcome, now)

    async def _send_catching(self, batch: _Batch, now: datetime) -> DeliveryReceipt | Exception:
        try:
            return await self._send(batch, now)
        except (RetryableDeliveryError, PermanentDeliveryError) as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - a rendering or adapter bug must not stall the others
            log.exception("notify.send_crashed", channel=batch.kind.value)
            return PermanentDeliveryError(f"{batch.kind.value} adapter error ({type(exc).__name__})")

    async def _record(
        self, conn: Connection, batch: _Batch, outcome: DeliveryReceipt | Exception, now: datetime
    ) -> dict[str, int]:
        if isinstance(outcome, DeliveryReceipt):
            return {"sent": await self._record_sent(conn, batch, outcome, now)}
        # One decision for the whole message: a digest's notices are retried at one time, so they go together again.
        retry = self._retry_decision(max(i.attempts for i in batch.items) + 1, outcome, now)
        async with conn.transaction():
            counts = {"retried": 0, "fell_back": 0, "failed": 0}
            for item in batch.items:
                counts[await self._record_failure(conn, item, batch.kind, outcome, retry, now)] += 1
            return counts

    def _retry_decision(self, attempts: int, error: Exception, now: datetime) -> RetryAt | GiveUp | None:
        """When to try again after a retryable failure (None: a permanent one, which falls back at once)."""
        if not isinstance(error, RetryableDeliveryError):
            return None
        kwargs: dict[str, Any] = {"now": now, "retry_after": error.retry_after}
        if self._rand is not None:
            kwargs["rand"] = self._rand
        return self._config.backoff.after_failure(attempts, **kwargs)

    async def _record_before_the_lease_ends(
        self, batch: _Batch, outcome: DeliveryReceipt | Exception, now: datetime
    ) -> dict[str, int]:
        deadline = time.monotonic() + 0.8 * self._config.lease.total_seconds()
        backoff = 0.2
        while True:
            log.warning("notify.record_retrying", notifications=len(batch.items), retry_in=backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
            try:
                async with self._pool().acquire() as conn:
                    return await self._record(conn, batch, outcome, now)
            except TRANSIENT_ERRORS:
                if time.monotonic() + backoff > deadline:
                    raise

    async def _send(self, batch: _Batch, now: datetime) -> DeliveryReceipt:
        channel = self._channels.get(batch.kind)
        if channel is None:
            raise PermanentDeliveryError(f"no {batch.kind.value} channel is configured")
        message = self._render(batch, now)
        if any(item.total_attempts > 0 or item.state == "sending" for item in batch.items):
            message = dataclasses.replace(message, maybe_sent_before=True)
        # Debug only: the outcome line (delivered, retry, fallback, failed) says the same with the result, and
        # the deliveries table shows what is in flight ('sending'); a second line per message cost ~3% CPU.
        log.debug("notify.sending", channel=batch.kind.value, message_id=message.message_id,
                  notifications=len(batch.items))
        receipt: DeliveryReceipt = await channel.send(message, batch.address)
        return receipt

    def _render(self, batch: _Batch, now: datetime) -> OutgoingMessage:
        cfg = self._config
        items = []
        for item in batch.items:
            r = item.request
            token = issue_ack_token(
                cfg.ack_secret, notification_id=r.notification_id, incident_id=r.incident_id,
                school_id=r.school_id, recipient_role=r.recipient.role, ttl=cfg.ack_ttl, clock=lambda: now,
            )
            items.append((r, Links(acknowledge=ack_url(cfg.public_base_url, token))))
        return render_digest(items)

    # ------------------------------------------------------------------ outcomes

    async def _record_withheld(self, conn: Connection, items: list[_Item], now: datetime) -> int:
        """Not sent: the incident was acknowledged before these went out. Reported as such, not as failed
        (triage would escalate on a failure)."""
        await conn.execute(
            "UPDATE deliveries SET state = 'withheld', finished_at = $2, updated_at = $2,"
            " last_error = 'withheld: the incident was acknowledged before it was sent'"
            " WHERE notification_id = ANY($1::text[])",
            [i.notification_id for i in items], now,
        )
        events = []
        for item in items:
            r = item.request
            assert item.acknowledged_at is not None  # overtaken_by_acknowledgement
            data = NotificationWithheld(
                notification_id=r.notification_id, incident_id=r.incident_id, recipient_role=r.recipient.role,
                level=r.level, generation=r.generation, acknowledged_at=item.acknowledged_at,
                reason="the incident was acknowledged before this notice was sent",
            )
            events.append(_event(EventType.NOTIFICATION_WITHHELD, item, data.model_dump(mode="json"), now))
        await enqueue(conn, events)
        log.info("notify.withheld", notifications=len(items))
        return len(items)

    async def _record_sent(self, conn: Connection, batch: _Batch, receipt: DeliveryReceipt, now: datetime) -> int:
        """Rows still as they were claimed are marked sent, with their delivered events, in one statement (no
        transaction round trips: recording sends a row at a time was ~18% of notify's samples at 100/s). A row
        somebody else changed since (a worker whose lease we outlived) is recorded as it now stands, or not
        at all if it is already finished."""
        expected = {
            item.notification_id: self._delivered(item, receipt, item.total_attempts + 1, now) for item in batch.items
        }
        sent_as = [receipt.channel.value, receipt.provider_id, receipt.message_id, now]
        recorded = await execute_and_enqueue_returned(conn, _RECORD_SENT, [
            [i.notification_id for i in batch.items], *sent_as,
            [expected[i.notification_id].id for i in batch.items], [i.total_attempts for i in batch.items],
        ], list(expected.values()))
        changed = {i.notification_id: i for i in batch.items if expected[i.notification_id].id not in recorded}
        sent = len(recorded)
        if changed:
            async with conn.transaction():
                rows = await conn.fetch(_RECORD_SENT_AS_THEY_STAND, list(changed), *sent_as)
                events = [self._delivered(changed[r["notification_id"]], receipt, r["total_attempts"], now)
                          for r in rows]
                await enqueue(conn, events)
            sent += len(events)
        log.info("notify.delivered", channel=receipt.channel.value, message_id=receipt.message_id,
                 notifications=sent)
        return sent

    @staticmethod
    def _delivered(item: _Item, receipt: DeliveryReceipt, attempts: int, now: datetime) -> CloudEvent:
        r = item.request
        data = NotificationDelivered(
            notification_id=r.notification_id, incident_id=r.incident_id, recipient_role=r.recipient.role,
            channel=receipt.channel, provider_id=receipt.provider_id, attempts=attempts,
        )
        return _event(EventType.NOTIFICATION_DELIVERED, item, data.model_dump(mode="json"), now)

    async def _record_failure(
        self, conn: Connection, item: _Item, kind: ChannelKind, error: Exception, decision: RetryAt | GiveUp | None,
        now: datetime,
    ) -> str:
        reason = getattr(error, "reason", str(error))
        attempts = item.attempts + 1
        errors = [*item.errors, f"{kind.value}: {reason}"][-20:]
        if decision is not None:
            if not isinstance(decision, GiveUp):
                await conn.execute(
                    "UPDATE deliveries SET state = 'pending', attempts = $2, total_attempts = total_attempts + 1,"
                    " next_attempt_at = $3, last_error = $4, errors = $5::jsonb, updated_at = $6"
                    " WHERE notification_id = $1 AND state NOT IN ('sent', 'failed')",
                    item.notification_id, attempts, decision.at, reason, json.dumps(errors), now,
                )
                log.info("notify.retry_scheduled", channel=kind.value, attempt=attempts, at=decision.at.isoformat())
                return "retried"
            errors[-1] += f" ({decision.reason})"
        next_index = item.channel_index + 1
        if next_index < len(item.request.recipient.channels):
            await conn.execute(
                "UPDATE deliveries SET state = 'pending', channel_index = $2, attempts = 0,"
                " total_attempts = total_attempts + 1, next_attempt_at = $3, last_error = $4, errors = $5::jsonb,"
                " updated_at = $3 WHERE notification_id = $1 AND state NOT IN ('sent', 'failed')",
                item.notification_id, next_index, now, reason, json.dumps(errors),
            )
            log.info("notify.fallback", from_channel=kind.value,
                     to_channel=item.request.recipient.channels[next_index].kind.value)
            return "fell_back"
        updated = await conn.fetchval(
            "UPDATE deliveries SET state = 'failed', total_attempts = total_attempts + 1, last_error = $2,"
            " errors = $3::jsonb, finished_at = $4, updated_at = $4"
            " WHERE notification_id = $1 AND state NOT IN ('sent', 'failed') RETURNING notification_id",
            item.notification_id, reason, json.dumps(errors), now,
        )
        if updated is not None:
            r = item.request
            data = NotificationFailed(
                notification_id=r.notification_id, incident_id=r.incident_id, recipient_role=r.recipient.role,
                level=r.level, generation=r.generation, errors=errors,
            )
            await enqueue(conn, [_event(EventType.NOTIFICATION_FAILED, item, data.model_dump(mode="json"), now)])
            log.warning("notify.failed", channels=len(r.recipient.channels))
        return "failed"


def wake_channel(schema: str) -> str:
    return f"notify_due_{schema}"


def _single(item: _Item) -> _Batch:
    channel = item.request.recipient.channels[item.channel_index]
    return _Batch(channel.kind, channel.address, (item,))


def _together_again(items: list[_Item]) -> list[_Batch]:
    """Notices that went out in one message and are due again (a retry, a fallback, a lease run out) go out in one
    message again, to the address each has now: the same notices give the same message id, so a receiver that
    had the first drops the repeat, and a digest of twenty never comes back as twenty messages. Alone otherwise."""
    groups: dict[tuple[str, throttle.AddressKey], list[_Item]] = {}
    batches = []
    for item in items:
        if item.batch_key is None:
            batches.append(_single(item))
            continue
        channel = item.request.recipient.channels[item.channel_index]
        groups.setdefault((item.batch_key, throttle.address_key(channel)), []).append(item)
    for group in groups.values():
        channel = group[0].request.recipient.channels[group[0].channel_index]
        batches.append(_Batch(channel.kind, channel.address, tuple(group)))
    return batches


def _address(batch: _Batch) -> ChannelAddress:
    return ChannelAddress(kind=batch.kind, address=batch.address)


def _key_text(key: throttle.AddressKey) -> str:
    return f"{key[0].value}:{key[1]}"


def _key_from_text(text: str) -> throttle.AddressKey:
    kind, _, address = text.partition(":")
    return ChannelKind(kind), address


def _event(type: EventType, item: _Item, data: dict[str, Any], now: datetime) -> CloudEvent:
    """Outcome events have ids derived from the notification id: recorded twice, published once."""
    r = item.request
    return CloudEvent(
        id=str(uuid.uuid5(EVENT_NAMESPACE, f"{type.value}:{r.notification_id}")),
        source=SOURCE, type=type, subject=r.incident_id, time=now, data=data, schoolid=r.school_id,
        correlationid=item.correlation_id, causationid=item.event_id,
    )
