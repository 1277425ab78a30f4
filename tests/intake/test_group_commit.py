"""Issue 3, points 1 and 3 under concurrency: reports written by group commit are each durable with their own
outbox row before their 202; one request's Idempotency-Key conflict is its own answer; a batch cut off by the
database going down answers 503 to each of its requests and leaves nothing of itself behind."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from intake_support import api_key, report, settings_for

from common.events import new_event, utc_now
from common.topics import EventType
from intake.group_commit import ReportWriter
from intake.main import create_app
from intake.models import IncidentAccepted
from intake.service import Intake
from intake.store import NewIncident


async def _until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


class Harness:
    def __init__(self, app: FastAPI, client: httpx.AsyncClient, admin: asyncpg.Connection, admin_dsn: str,
                 schema: str) -> None:
        self.app, self.client, self.admin, self.admin_dsn, self.schema = app, client, admin, admin_dsn, schema

    @property
    def writer(self) -> ReportWriter:
        intake: Intake = self.app.state.intake
        assert intake.report_writer is not None, "no report written yet"
        return intake.report_writer

    def post(self, body: dict[str, Any], key: str | None = None) -> asyncio.Task[httpx.Response]:
        headers = {**api_key(), **({"Idempotency-Key": key} if key else {})}
        return asyncio.create_task(self.client.post("/v1/incidents", json=body, headers=headers))

    async def stored(self) -> tuple[set[str], list[str]]:
        """Incident ids in the table, and the subjects of the outbox's incidents.reported rows."""
        ids = {str(r["id"]) for r in await self.admin.fetch(f"SELECT id FROM {self.schema}.incidents")}  # noqa: S608
        subjects = [json.loads(r["value"])["subject"] for r in await self.admin.fetch(
            f"SELECT value FROM {self.schema}.outbox WHERE topic = 'incidents.reported'")]  # noqa: S608
        return ids, subjects

    async def writes_waiting_on_a_lock(self) -> list[int]:
        """The intake connections whose INSERT INTO incidents waits for a lock."""
        rows = await self.admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'"
            " AND query LIKE '%INSERT INTO incidents%'", self.schema,
        )
        return [r["pid"] for r in rows]

    async def hold_incidents_table(self) -> asyncpg.Connection:
        """Another session that blocks every insert into incidents until it commits."""
        conn = await asyncpg.connect(self.admin_dsn)
        await conn.execute("BEGIN")
        await conn.execute(f"LOCK TABLE {self.schema}.incidents IN SHARE ROW EXCLUSIVE MODE")
        return conn


@pytest.fixture
async def harness(stack: Any, isolation: str) -> AsyncIterator[Harness]:
    settings = settings_for(stack, isolation, write_batches_in_flight=1)
    app = create_app(settings)
    admin = await asyncpg.connect(settings.database_url)
    try:
        async with app.router.lifespan_context(app):
            # raise_app_exceptions=False: a 503 is answered and the error also re-raised, as under uvicorn.
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://intake.test") as client:
                yield Harness(app, client, admin, settings.database_url, settings.schema_name)
    finally:
        await admin.close()


async def test_concurrent_reports_are_written_in_batches_each_with_its_own_incident_and_outbox_row(
    harness: Harness,
) -> None:
    first = await harness.post(report())  # the writer exists; the lock below then holds the next batch
    assert first.status_code == 202
    lock = await harness.hold_incidents_table()
    try:
        held = harness.post(report())
        await _until(lambda: _waiting(harness, 1), "the first batch waits on the lock")
        tasks = [harness.post(report(where=f"Room {i}")) for i in range(40)]
        await _until(lambda: _queued(harness, 40), "40 reports are queued behind it")
    finally:
        await lock.execute("COMMIT")
        await lock.close()
    answers = [await held] + [await t for t in tasks]
    assert [a.status_code for a in answers] == [202] * 41
    accepted = {a.json()["incident_id"] for a in answers} | {first.json()["incident_id"]}
    assert len(accepted) == 42
    assert len({a.json()["reference"] for a in answers}) == 41
    ids, subjects = await harness.stored()
    assert ids == accepted
    assert sorted(subjects) == sorted(accepted)  # exactly one outbox row per incident
    # 42 reports in 3 commits: the first alone, the held one alone, then the 40 queued behind it together.
    assert (harness.writer.batches_total, harness.writer.reports_total) == (3, 42)


async def _waiting(h: Harness, n: int) -> bool:
    return len(await h.writes_waiting_on_a_lock()) >= n


async def _queued(h: Harness, n: int) -> bool:
    return h.writer.queued >= n


async def test_an_idempotency_key_conflict_in_a_batch_is_that_request_s_answer_alone(harness: Harness) -> None:
    original = await harness.post(report(), key="cpoms-77")
    assert original.status_code == 202
    lock = await harness.hold_incidents_table()
    try:
        held = harness.post(report())
        await _until(lambda: _waiting(harness, 1), "a batch waits on the lock")
        others = [harness.post(report(where=f"Room {i}"), key=f"new-{i}" if i % 2 else None) for i in range(6)]
        conflicting = harness.post(report(where="Library"), key="cpoms-77")
        await _until(lambda: _queued(harness, 7), "the next batch is queued")
    finally:
        await lock.execute("COMMIT")
        await lock.close()
    assert (await held).status_code == 202
    answers = [await t for t in others]
    assert [a.status_code for a in answers] == [202] * 6
    refused = await conflicting
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("/idempotency-key-reused")
    retried = await harness.post(report(), key="cpoms-77")
    assert retried.status_code == 202
    assert retried.json() == original.json()
    assert retried.headers["idempotent-replayed"] == "true"
    ids, subjects = await harness.stored()
    expected = {original.json()["incident_id"], (await held).json()["incident_id"]} | {
        a.json()["incident_id"] for a in answers}
    assert ids == expected and sorted(subjects) == sorted(expected)
    assert harness.writer.batches_total == 4  # original, held, the seven together, the retry


async def test_the_database_going_down_mid_batch_answers_503_to_each_request_and_writes_nothing(
    harness: Harness,
) -> None:
    warm = await harness.post(report())
    assert warm.status_code == 202
    lock = await harness.hold_incidents_table()
    try:
        held = harness.post(report(), key="held-1")
        await _until(lambda: _waiting(harness, 1), "the first batch waits on the lock")
        batch = [harness.post(report(where=f"Room {i}"), key=f"cut-{i}" if i % 2 else None) for i in range(5)]
        await _until(lambda: _queued(harness, 5), "five reports are queued behind it")
        # Cut the first batch's connection: the five then go as one batch, which meets the lock too; cut it.
        for _ in range(2):
            pids = await harness.writes_waiting_on_a_lock()
            assert len(pids) == 1
            await harness.admin.execute("SELECT pg_terminate_backend($1)", pids[0])
            await _until(lambda gone=pids[0]: _written_or_waiting(harness, gone),  # type: ignore[misc]
                         "the next batch waits, or none is left")
    finally:
        await lock.execute("COMMIT")
        await lock.close()
    answers = [await held] + [await t for t in batch]
    assert [a.status_code for a in answers] == [503] * 6
    for answer in answers:
        assert answer.headers["Retry-After"] == "2"
        assert "nothing was accepted" in answer.json()["detail"]
    ids, subjects = await harness.stored()
    assert ids == {warm.json()["incident_id"]} and subjects == [warm.json()["incident_id"]]
    keys = await harness.admin.fetchval(f"SELECT count(*) FROM {harness.schema}.idempotency_keys")  # noqa: S608
    assert keys == 0  # the claims of the cut-off batch were rolled back with it
    # The database is back (the pool reconnects): a retry with the same key is a first write, not a replay.
    again = await harness.post(report(where="Room 1"), key="cut-1")
    assert again.status_code == 202 and "idempotent-replayed" not in again.headers
    assert harness.writer.batches_total == 2  # warm, again: the two cut-off batches committed nothing


async def _written_or_waiting(h: Harness, gone: int) -> bool:
    pids = await h.writes_waiting_on_a_lock()
    return (bool(pids) and gone not in pids) or (h.writer.in_flight == 0 and h.writer.queued == 0)


async def test_a_reference_drawn_twice_is_drawn_again_for_the_batch(stack: Any, isolation: str) -> None:
    settings = settings_for(stack, isolation)
    drawn = iter(["OSI-AAAAAA", "OSI-AAAAAA", "OSI-BBBBBB"])
    app = create_app(settings, intake=Intake(settings, references=lambda: next(drawn)))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://i") as client:
        first = await client.post("/v1/incidents", json=report(), headers=api_key())
        second = await client.post("/v1/incidents", json=report(), headers=api_key())
    assert (first.status_code, second.status_code) == (202, 202)
    assert (first.json()["reference"], second.json()["reference"]) == ("OSI-AAAAAA", "OSI-BBBBBB")


def _incident(number: int, report_json: str) -> Callable[[str], NewIncident]:
    def build(reference: str) -> NewIncident:
        incident_id = uuid.uuid4()
        event = new_event(EventType.INCIDENT_REPORTED, source="intake", subject=str(incident_id),
                          schoolid="school-a", data={"n": number})
        return NewIncident(
            id=incident_id, reference=reference, school_id="school-a", integration_id="cpoms-a",
            category="inappropriate_access_accidental", risk_area="content", child_at_immediate_risk=False,
            occurred_at=utc_now(), report_json=report_json, received_at=utc_now(), event=event,
            accepted=IncidentAccepted(incident_id=incident_id, reference=reference, status_url="/x"),
        )

    return build


async def test_a_batch_refused_for_one_report_s_data_is_written_again_one_by_one(harness: Harness) -> None:
    pool = harness.app.state.runtime.pool
    writer = ReportWriter(lambda: pool, lambda: "OSI-" + uuid.uuid4().hex[:6].upper(), utc_now)
    builds = [_incident(i, "{}" if i != 3 else "{not json") for i in range(6)]
    # Written from one turn of the event loop: the six go as one batch, which PostgreSQL refuses whole.
    results = await asyncio.gather(*(writer.write(b, None) for b in builds), return_exceptions=True)
    assert [isinstance(r, asyncpg.DataError) for r in results] == [False, False, False, True, False, False]
    assert (writer.batches_total, writer.reports_total) == (5, 5)  # the refused batch, then one report at a time
    ids, subjects = await harness.stored()
    written = {str(r.incident.id) for r in results if not isinstance(r, BaseException) and r.incident}
    assert len(written) == 5 and ids == written and sorted(subjects) == sorted(written)
