"""The audit service's log on the real broker and database: every topic lands once and in order,
the database refuses rewrites for every role, and rewrites done anyway are located by verification."""

from __future__ import annotations

import asyncio
import io
import json

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from structlog.testing import capture_logs
from support.helpers import eventually, produce

from audit.checkpoint import Checkpoint, LogSigner
from audit.checkpoints import checkpoint_all, checkpoint_school, origin_of
from audit.cli import run_cli
from audit.store import append
from common.db import SchemaRoles, app_password, dsn_for_role
from common.events import new_event
from common.topics import EventType, Topic

from .service_support import audit_settings, bearer, incident_events, log_events, running


async def _rows(admin_dsn: str, schema: str, school: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(admin_dsn)
    try:
        return await conn.fetch(
            f"SELECT seq, event_id, topic, event FROM {schema}.audit_records WHERE school_id = $1 ORDER BY seq",  # noqa: S608
            school,
        )
    finally:
        await conn.close()


async def test_one_event_dead_lettered_by_several_consumers_is_kept_once_for_each(stack, isolation, tmp_path):
    """An acknowledgement is consumed by triage, notify and intake. If two of them cannot handle it, each
    dead-letters it: the log keeps both facts (they used to share one id, and the second was dropped as a repeat),
    and a repeat of either is still kept once."""
    settings = audit_settings(isolation, stack, tmp_path)
    school, schema = "school-d", f"{isolation}_audit"
    ack = new_event(EventType.INCIDENT_ACKNOWLEDGED, source="tests", subject="inc-d1", schoolid=school,
                    data={"incident_id": "inc-d1"}, event_id="ack-d1")
    dlq = f"{isolation}.{Topic.INCIDENTS_ACKNOWLEDGED.dlq}"
    async with running(settings, consume=True):
        for consumer in ("triage", "notify", "triage"):
            headers = [("dlq.consumer", f"{isolation}.{consumer}".encode()), ("dlq.error", b"ValueError: bad")]
            await produce(stack.bootstrap, dlq, [ack.to_bytes()], key=b"inc-d1", headers=headers)

        async def both_landed() -> bool:
            return len(await _rows(stack.admin_dsn, schema, school)) >= 2

        await eventually(both_landed, timeout=30, what="both dead letters in the chain")
        await asyncio.sleep(1.0)  # the repeat adds nothing
        rows = await _rows(stack.admin_dsn, schema, school)
    assert sorted(r["event_id"] for r in rows) == [
        f"{Topic.INCIDENTS_ACKNOWLEDGED.dlq}:{isolation}.notify:ack-d1",
        f"{Topic.INCIDENTS_ACKNOWLEDGED.dlq}:{isolation}.triage:ack-d1",
    ]


async def test_events_of_every_topic_and_dead_letters_land_once_in_order_and_verify(stack, isolation, tmp_path):
    settings = audit_settings(isolation, stack, tmp_path, checkpoint_interval_seconds=0.5)
    school, schema = "school-k", f"{isolation}_audit"
    events = incident_events(school, "inc-k1")
    dead = new_event(EventType.INCIDENT_REPORTED, source="tests", subject="inc-k2", schoolid=school,
                     data={"incident_id": "inc-k2"}, event_id="dead-1")
    async with running(settings, consume=True) as (_, client):
        for e in events:  # each on its own topic, one of them twice
            await produce(stack.bootstrap, f"{isolation}.{e.topic.value}", [e.to_bytes()], key=e.key)
        first = events[0]
        await produce(stack.bootstrap, f"{isolation}.{first.topic.value}", [first.to_bytes()], key=first.key)
        # a dead letter of an event the log already holds, one it does not, and a malformed value
        dlq = f"{isolation}.{Topic.INCIDENTS_REPORTED.dlq}"
        malformed = b'{"schoolid": "school-k", "not": "an event"}'
        await produce(stack.bootstrap, dlq, [first.to_bytes(), dead.to_bytes(), malformed], key=b"inc-k1")
        in_order = [new_event(EventType.INCIDENT_REPORTED, source="tests", subject="inc-k9", schoolid=school,
                              data={"incident_id": "inc-k9", "n": n}, event_id=f"k9-{n}") for n in range(5)]
        await produce(stack.bootstrap, f"{isolation}.{Topic.INCIDENTS_REPORTED}", [e.to_bytes() for e in in_order],
                      key=b"inc-k9")
        expected = len(events) + 3 + len(in_order)

        async def all_landed() -> bool:
            return len(await _rows(stack.admin_dsn, schema, school)) >= expected

        await eventually(all_landed, timeout=30, what="every record in the chain")
        await asyncio.sleep(1.0)  # nothing more arrives: no duplicates
        rows = await _rows(stack.admin_dsn, schema, school)
        assert [r["seq"] for r in rows] == list(range(1, expected + 1))
        ids = [r["event_id"] for r in rows]
        assert len(set(ids)) == len(ids)
        normal = [r["event_id"] for r in rows if not r["topic"].endswith(".dlq")]
        assert sorted(normal) == sorted(e.id for e in events + in_order)
        dlq_rows = [r for r in rows if r["topic"] == Topic.INCIDENTS_REPORTED.dlq]
        assert len(dlq_rows) == 3
        kinds = sorted(json.loads(r["event"])["kind"] for r in dlq_rows)
        assert kinds == ["dead_letter", "dead_letter", "dead_letter"]
        malformed = [json.loads(r["event"]) for r in dlq_rows if json.loads(r["event"])["event"] is None]
        assert len(malformed) == 1 and malformed[0]["error"]
        # within a topic and key, in the order published
        positions = {r["event_id"]: r["seq"] for r in rows}
        assert [positions[e.id] for e in in_order] == sorted(positions[e.id] for e in in_order)

        async def checkpointed() -> bool:
            return (tmp_path / "checkpoints" / f"{school}.txt").exists()

        await eventually(checkpointed, timeout=10, what="a signed checkpoint")
        resp = await client.get("/v1/audit/verify", headers=bearer(settings, "governor", school))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["intact"] is True, body
        assert body["message"].startswith(f"intact up to {expected}")
        assert body["checkpoints_verified"] >= 2  # the one in the database and the copy outside it


STATEMENTS = {
    "UPDATE": "UPDATE {s}.audit_records SET topic = 'x'",
    "DELETE": "DELETE FROM {s}.audit_records",
    "TRUNCATE": "TRUNCATE {s}.audit_records",
    "UPDATE checkpoint": "UPDATE {s}.audit_checkpoints SET note = 'x'",
    "DELETE checkpoint": "DELETE FROM {s}.audit_checkpoints",
    "TRUNCATE checkpoint": "TRUNCATE {s}.audit_checkpoints",
}


async def test_every_role_is_refused_update_delete_and_truncate(stack, isolation, tmp_path):
    settings = audit_settings(isolation, stack, tmp_path)
    schema = settings.schema_name
    async with running(settings) as (app, _):
        pool = app.state.runtime.pool
        await log_events(pool, incident_events("school-a", "inc-a1")[:3])
        async with pool.acquire() as conn:
            await checkpoint_all(conn, settings, app.state.signer)
    roles = SchemaRoles(schema)
    app_dsn = dsn_for_role(stack.admin_dsn, roles.app, app_password(stack.admin_dsn, roles.app, None))
    refused: dict[tuple[str, str], str] = {}
    for who in ("app", "owner", "superuser", "replica"):
        conn = await asyncpg.connect(app_dsn if who == "app" else stack.admin_dsn)
        try:
            if who == "owner":
                await conn.execute(f"SET ROLE {roles.owner}")
            if who == "replica":
                await conn.execute("SET session_replication_role = replica")
            for name, sql in STATEMENTS.items():
                with pytest.raises(asyncpg.PostgresError) as caught:
                    await conn.execute(sql.format(s=schema))
                refused[(who, name)] = str(caught.value)
            if who == "app":  # nor can the service's role switch the guard off
                with pytest.raises(asyncpg.PostgresError, match="must be owner"):
                    await conn.execute(f"ALTER TABLE {schema}.audit_records DISABLE TRIGGER ALL")
        finally:
            await conn.close()
    assert len(refused) == 4 * len(STATEMENTS)
    for (who, name), message in refused.items():
        if who == "app":
            assert "permission denied" in message, (who, name, message)
        else:
            assert "append-only" in message, (who, name, message)
    rows = await _rows(stack.admin_dsn, schema, "school-a")
    assert [r["seq"] for r in rows] == [1, 2, 3] and {r["topic"] for r in rows} != {"x"}


async def test_a_changed_a_deleted_and_a_reordered_row_are_each_located(stack, isolation, tmp_path):
    settings = audit_settings(isolation, stack, tmp_path)
    schema = settings.schema_name
    async with running(settings) as (app, client):
        pool = app.state.runtime.pool
        for school in ("school-c", "school-d", "school-r"):
            await log_events(pool, incident_events(school, f"inc-{school}"))
        async with pool.acquire() as conn:
            await checkpoint_all(conn, settings, app.state.signer)
        for school in ("school-c", "school-d", "school-r"):
            resp = await client.get("/v1/audit/verify", headers=bearer(settings, "dsl", school))
            assert resp.json()["intact"] is True, resp.json()

        su = await asyncpg.connect(stack.admin_dsn)
        try:  # behind the service's back, as a superuser who switches the trigger off explicitly
            await su.execute(f"ALTER TABLE {schema}.audit_records DISABLE TRIGGER audit_records_no_update_delete")
            await su.execute(
                f"UPDATE {schema}.audit_records"  # noqa: S608
                " SET event = convert_to(replace(convert_from(event, 'UTF8'), '\"dsl\"', '\"hea\"'), 'UTF8')"
                " WHERE school_id = 'school-c' AND seq = 3"
            )
            await su.execute(f"DELETE FROM {schema}.audit_records WHERE school_id = 'school-d' AND seq = 4")  # noqa: S608
            # rows 4 and 5 swap places in the order the log was written: deleted and written back swapped
            moved = await su.fetch(
                f"DELETE FROM {schema}.audit_records WHERE school_id = 'school-r' AND seq IN (4, 5)"  # noqa: S608
                " RETURNING *"
            )
            first, second = sorted(moved, key=lambda r: r["pos"])
            for row, pos in ((first, second["pos"]), (second, first["pos"])):
                values = dict(row) | {"pos": pos}
                await su.execute(
                    f"INSERT INTO {schema}.audit_records ({', '.join(values)}) OVERRIDING SYSTEM VALUE"  # noqa: S608
                    f" VALUES ({', '.join(f'${i}' for i in range(1, len(values) + 1))})",
                    *values.values(),
                )
            await su.execute(f"ALTER TABLE {schema}.audit_records ENABLE ALWAYS TRIGGER audit_records_no_update_delete")
        finally:
            await su.close()

        changed = (await client.get("/v1/audit/verify", headers=bearer(settings, "dsl", "school-c"))).json()
        deleted = (await client.get("/v1/audit/verify", headers=bearer(settings, "dsl", "school-d"))).json()
        reordered = (await client.get("/v1/audit/verify", headers=bearer(settings, "dsl", "school-r"))).json()
        out = io.StringIO()
        assert await run_cli(["verify", "--school", "school-c"], settings, out) == 1
        assert "record 3 changed" in out.getvalue()
    assert changed["intact"] is False
    assert changed["problem"]["kind"] == "changed" and changed["problem"]["seq"] == 3, changed
    assert changed["intact_up_to"] == 2
    assert deleted["problem"]["kind"] == "missing" and deleted["problem"]["seq"] == 4, deleted
    assert deleted["intact_up_to"] == 3
    assert reordered["problem"]["kind"] == "reordered", reordered
    assert reordered["problem"]["seq"] in (4, 5) and reordered["intact_up_to"] == 3, reordered


async def test_the_checkpoint_loop_refuses_to_sign_over_a_rewritten_log(stack, isolation, tmp_path):
    settings = audit_settings(isolation, stack, tmp_path)
    schema = settings.schema_name
    async with running(settings) as (app, _):
        pool = app.state.runtime.pool
        events = incident_events("school-x", "inc-x")
        await log_events(pool, events[:4])
        async with pool.acquire() as conn:
            assert await checkpoint_all(conn, settings, app.state.signer) == 1
        su = await asyncpg.connect(stack.admin_dsn)
        try:  # rewrite history consistently: drop everything and re-append a different chain
            await su.execute(f"ALTER TABLE {schema}.audit_records DISABLE TRIGGER audit_records_no_truncate")
            await su.execute(f"TRUNCATE {schema}.audit_records")
            await su.execute(f"ALTER TABLE {schema}.audit_records ENABLE ALWAYS TRIGGER audit_records_no_truncate")
        finally:
            await su.close()
        async with pool.acquire() as conn:
            for e in reversed(events):
                async with conn.transaction():
                    await append(conn, e.schoolid, event_id=e.id, topic=e.topic.value, event=e.to_bytes())
            assert await checkpoint_all(conn, settings, app.state.signer) == 0  # refused: not an extension
            sizes = [r["size"] for r in await conn.fetch("SELECT size FROM audit_checkpoints")]
    assert sizes == [4]


async def test_checkpoint_rows_the_log_did_not_sign_neither_stop_signing_nor_are_extended(stack, isolation, tmp_path):
    """The writer's role may insert into audit_checkpoints. A row signed by another key, at a size beyond the log's,
    used to be taken as the last checkpoint: signing stopped ('records were removed'). It is passed over now, and
    one in the very place of the next checkpoint is refused for that school alone, naming it."""
    settings = audit_settings(isolation, stack, tmp_path)
    stranger = LogSigner(settings.log_origin, Ed25519PrivateKey.generate())

    def forged(school: str, size: int) -> str:
        return stranger.sign_note(Checkpoint(origin_of(settings, school), size, b"\x07" * 32).text())

    async with running(settings) as (app, client):
        pool = app.state.runtime.pool
        await log_events(pool, incident_events("school-f", "inc-f"))
        await log_events(pool, incident_events("school-g", "inc-g"))
        async with pool.acquire() as conn:
            sizes = {school: await conn.fetchval("SELECT count(*) FROM audit_records WHERE school_id = $1", school)
                     for school in ("school-f", "school-g")}
            insert = "INSERT INTO audit_checkpoints (school_id, size, root_hash, note) VALUES ($1, $2, $3, $4)"
            await conn.execute(insert, "school-f", 1_000_000, b"\x07" * 32, forged("school-f", 1_000_000))
            await conn.execute(insert, "school-g", sizes["school-g"], b"\x07" * 32,
                               forged("school-g", sizes["school-g"]))
            with capture_logs() as logs:
                assert await checkpoint_all(conn, settings, app.state.signer) == 1  # school-f; school-g refused
            signed = await conn.fetch("SELECT school_id, size, note FROM audit_checkpoints ORDER BY school_id, size")
        verified = (await client.get("/v1/audit/verify", headers=bearer(settings, "dsl", "school-f"))).json()
    ours = [(r["school_id"], r["size"]) for r in signed if r["note"] != forged(r["school_id"], r["size"])]
    assert ours == [("school-f", sizes["school-f"])]
    assert [(e["event"], e["school_id"]) for e in logs if e["log_level"] == "error"] == [
        ("audit.checkpoint_row_not_ours", "school-f"), ("audit.checkpoint_row_not_ours", "school-g"),
        ("audit.checkpoint_refused", "school-g"),
    ]
    refused = next(e for e in logs if e["event"] == "audit.checkpoint_refused")
    assert f"a checkpoint of size {sizes['school-g']} not signed by this log is in its place" in refused["error"]
    assert verified["checkpoint_problem"] is not None  # the verification shows the row that is not the log's


async def test_two_audit_processes_checkpointing_at_once_sign_once(stack, isolation, tmp_path):
    settings = audit_settings(isolation, stack, tmp_path)
    async with running(settings) as (app, _):
        pool = app.state.runtime.pool
        await log_events(pool, incident_events("school-h", "inc-h"))
        async with pool.acquire() as one, pool.acquire() as other:
            results = await asyncio.gather(*(checkpoint_school(conn, settings, app.state.signer, "school-h")
                                             for conn in (one, other)))
            count = await one.fetchval("SELECT count(*) FROM audit_checkpoints WHERE school_id = 'school-h'")
    assert sorted(r is None for r in results) == [False, True] and count == 1
