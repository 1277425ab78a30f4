"""Group commit: reports that arrive together are written together, each answered only once its row is committed.

A report waits while earlier batches are being written (at most `max_in_flight` at once) and then goes into the
next batch with everything that arrived meanwhile: alone when intake is quiet, so nothing waits on a timer, and
in batches of dozens under load, where one statement and one commit serve them all. A batch is atomic: it is
committed whole or not at all, so a database outage answers every request of the batch with the same error and
leaves nothing half-written. One request's Idempotency-Key conflict is that request's answer alone; a batch that
PostgreSQL refuses for one row's data is written again one report at a time, so the others are still accepted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import structlog

from intake import store
from intake.problems import DEPENDENCY_DOWN, IdempotencyKeyReused
from intake.store import Claim, EarlierAnswer, NewIncident

log = structlog.get_logger(__name__)

MAX_BATCH = 256
MAX_IN_FLIGHT = 2
_REFERENCE_ATTEMPTS = 5
_CONFLICT_ATTEMPTS = 3  # a deadlock or serialisation failure between two intake processes: the batch again

# Errors that say nothing about the rows: every request of the batch gets them (a 503 for an outage).
_NOT_THE_DATA = (*DEPENDENCY_DOWN, asyncpg.exceptions.OperatorInterventionError,
                 asyncpg.exceptions.InsufficientResourcesError, asyncpg.exceptions.TransactionRollbackError)


@dataclass(frozen=True)
class Written:
    """What happened to one report: written now (`incident`), or the JSON answer an earlier request with its
    Idempotency-Key got (`replayed_answer`)."""

    incident: NewIncident | None = None
    replayed_answer: str | None = None


# Builds the report's row, event and answer around a (fresh) human reference.
Build = Callable[[str], NewIncident]


@dataclass(eq=False)
class _Pending:
    build: Build
    claim: Claim | None
    future: asyncio.Future[Written]
    incident: NewIncident | None = field(default=None)


class ReportWriter:
    def __init__(
        self, pool: Callable[[], asyncpg.Pool], references: Callable[[], str], clock: Callable[[], datetime], *,
        max_batch: int = MAX_BATCH, max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._pool = pool
        self._references = references
        self._clock = clock
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._queue: list[_Pending] = []
        self._in_flight = 0
        self._kick_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches_total = 0
        self.reports_total = 0

    @property
    def queued(self) -> int:
        """Reports waiting for a batch (not those being written)."""
        return sum(1 for p in self._queue if not p.future.done())

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def write(self, build: Build, claim: Claim | None) -> Written:
        """Write one report with the next batch; returns once it is committed (or raises what the batch met)."""
        loop = asyncio.get_running_loop()
        pending = _Pending(build, claim, loop.create_future())
        self._queue.append(pending)
        if not self._kick_scheduled:
            # After the reports that arrived in this same turn of the event loop have joined the queue.
            self._kick_scheduled = True
            loop.call_soon(self._kick)
        return await pending.future

    def _kick(self) -> None:
        self._kick_scheduled = False
        while self._queue and self._in_flight < self._max_in_flight:
            batch = self._take()
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._flush(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Pending]:
        """The next batch: in arrival order, without two claims of one key (the second waits for the next batch,
        where it finds the first one's answer)."""
        batch: list[_Pending] = []
        keys: set[tuple[str, str]] = set()
        rest: list[_Pending] = []
        for pending in self._queue:
            if pending.future.done():
                continue  # its request was cancelled before it was written: nothing to do
            key = (pending.claim.namespace, pending.claim.key) if pending.claim else None
            if len(batch) >= self._max_batch or (key is not None and key in keys):
                rest.append(pending)
                continue
            if key is not None:
                keys.add(key)
            batch.append(pending)
        self._queue = rest
        return batch

    async def _flush(self, batch: list[_Pending]) -> None:
        try:
            if batch:
                await self._write_or_split(batch)
        except BaseException:
            # Cancelled (the service is stopping): whether the batch was committed is unknown, as when a
            # connection is lost mid-commit. Its requests are answered as for an outage; a retry with the
            # same Idempotency-Key then returns the first answer if it was.
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(ConnectionError("the write was interrupted"))
            raise
        finally:
            self._in_flight -= 1
            self._kick()

    async def _write_or_split(self, batch: list[_Pending]) -> None:
        try:
            await self._write_batch(batch)
        except Exception as exc:
            if len(batch) > 1 and isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, _NOT_THE_DATA):
                # One report's data was refused: write each alone, so that only its own request fails.
                log.warning("intake.batch_split", reports=len(batch), error=type(exc).__name__)
                for pending in batch:
                    await self._write_or_split([pending])
                return
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)

    async def _write_batch(self, batch: list[_Pending]) -> None:
        collisions = conflicts = 0
        while True:
            for pending in batch:
                pending.incident = pending.build(self._references())
            try:
                outcomes = await self._commit(batch)
                break
            except asyncpg.UniqueViolationError as exc:
                # Two reports drew the same random reference: draw again for the whole batch.
                collisions += 1
                if exc.constraint_name != "incidents_reference_key" or collisions >= _REFERENCE_ATTEMPTS:
                    raise
            except asyncpg.exceptions.TransactionRollbackError:
                conflicts += 1
                if conflicts >= _CONFLICT_ATTEMPTS:
                    raise
        self.batches_total += 1
        self.reports_total += len(batch)
        for pending, outcome in zip(batch, outcomes, strict=True):
            if pending.future.done():
                continue
            if isinstance(outcome, Exception):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)

    async def _commit(self, batch: list[_Pending]) -> list[Written | Exception]:
        incidents = [p.incident for p in batch if p.incident is not None]
        assert len(incidents) == len(batch)
        async with self._pool().acquire() as conn:
            if all(p.claim is None for p in batch):
                await store.insert_incidents(conn, incidents)  # one statement: atomic without a transaction
                return [Written(incident) for incident in incidents]
            async with conn.transaction():
                earlier = await store.claim_idempotency_keys(
                    conn, [(p.claim, i.accepted.model_dump_json()) for p, i in zip(batch, incidents, strict=True)
                           if p.claim is not None],
                    202, self._clock(),
                )
                outcomes = [_outcome(p.claim, i, earlier) for p, i in zip(batch, incidents, strict=True)]
                new = [o.incident for o in outcomes if isinstance(o, Written) and o.incident is not None]
                if new:
                    await store.insert_incidents(conn, new)
                return outcomes


def _outcome(claim: Claim | None, incident: NewIncident, earlier: dict[tuple[str, str], EarlierAnswer | None]
             ) -> Written | Exception:
    if claim is None:
        return Written(incident)
    first = earlier[(claim.namespace, claim.key)]  # every key is either claimed now or found
    if first is None:
        return Written(incident)
    if first.request_hash != claim.digest:
        return IdempotencyKeyReused()
    return Written(replayed_answer=first.response)
