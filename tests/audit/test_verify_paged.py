"""Verification and search read the log a page at a time: over a log many pages long it finds what reading it whole
finds, an intact log and its checkpoints, a changed record, a rewritten-and-rehashed one at the end of a page,
and two records swapped across a page boundary."""

from __future__ import annotations

import hashlib

import asyncpg
import pytest

from audit.chain import canonical_event_bytes, canonical_json
from audit.checkpoints import checkpoint_all
from audit.projection import rebuild
from audit.replay import folded_states, live_states, load_events, logged_pages
from audit.store import Entry, append_many, load_records, record_pages
from audit.verify import verify_school

from .service_support import audit_settings, incident_events, log_events, running

PAGE = 7  # 50 records are eight pages


async def _log(pool: asyncpg.Pool, school: str, n: int, first: int = 0) -> None:
    payload = canonical_event_bytes(incident_events(school, f"inc-{school}")[0])
    async with pool.acquire() as conn, conn.transaction():
        await append_many(conn, [Entry(school, f"{school}-{i}", "incidents.reported", payload)
                                 for i in range(first, first + n)])


async def _as_superuser(admin_dsn: str, schema: str, *statements: tuple[str, list[object]]) -> None:
    su = await asyncpg.connect(admin_dsn)
    try:
        await su.execute(f"ALTER TABLE {schema}.audit_records DISABLE TRIGGER audit_records_no_update_delete")
        for sql, args in statements:
            await su.execute(sql.format(s=schema), *args)
        await su.execute(f"ALTER TABLE {schema}.audit_records ENABLE ALWAYS TRIGGER audit_records_no_update_delete")
    finally:
        await su.close()


async def test_paged_verification_finds_what_a_whole_read_finds(stack, isolation, tmp_path):
    settings = audit_settings(isolation, stack, tmp_path)
    schema = settings.schema_name
    schools = ["school-p-intact", "school-p-changed", "school-p-rehashed", "school-p-swapped"]
    async with running(settings) as (app, _):
        pool, verifier = app.state.runtime.pool, app.state.signer.verifier
        for school in schools:
            await _log(pool, school, 30)
        async with pool.acquire() as conn:
            await checkpoint_all(conn, settings, app.state.signer)  # signed at 30 records
        for school in schools:
            await _log(pool, school, 20, first=30)
        async with pool.acquire() as conn:
            pages = [len(p) async for p in record_pages(conn, "school-p-intact", PAGE)]
            with pytest.raises(ValueError, match="page_size"):
                await anext(record_pages(conn, "school-p-intact", 0))
            r21 = next(r for r in await load_records(conn, "school-p-rehashed") if r.seq == 21)
        assert pages == [7] * 7 + [1]

        # behind the service's back: record 23 changed; record 21 (a page's last) changed and re-hashed so
        # that only record 22 (the next page's first) shows it; records 14 and 15 swapped across a page boundary
        rewritten = canonical_json({"rewritten": True})
        rehash = hashlib.sha256(r21.prev_hash + r21.__class__(
            school_id=r21.school_id, seq=21, event_id=r21.event_id, topic=r21.topic, event=rewritten,
            recorded_at=r21.recorded_at, prev_hash=r21.prev_hash, hash=b"").canonical).digest()
        await _as_superuser(
            stack.admin_dsn, schema,
            ("UPDATE {s}.audit_records SET event = $1 WHERE school_id = 'school-p-changed' AND seq = 23", [rewritten]),
            ("UPDATE {s}.audit_records SET event = $1, hash = $2 WHERE school_id = 'school-p-rehashed' AND seq = 21",
             [rewritten, rehash]),
            # deleted and written back with their places (pos) exchanged
            ("CREATE TEMP TABLE moved AS SELECT * FROM {s}.audit_records "
             "WHERE school_id = 'school-p-swapped' AND seq IN (14, 15)", []),
            ("DELETE FROM {s}.audit_records WHERE school_id = 'school-p-swapped' AND seq IN (14, 15)", []),
            ("INSERT INTO {s}.audit_records OVERRIDING SYSTEM VALUE SELECT (SELECT pos FROM moved o "
             "WHERE o.seq <> m.seq), school_id, seq, event_id, topic, event, hash, prev_hash, recorded_at "
             "FROM moved m", []),
        )
        async with pool.acquire() as conn:
            paged = {s: await verify_school(conn, settings, verifier, s, page_size=PAGE) for s in schools}
            whole = {s: await verify_school(conn, settings, verifier, s, page_size=10_000) for s in schools}
    assert paged == whole, str([(paged[s], whole[s]) for s in schools if paged[s] != whole[s]])
    intact, changed = paged["school-p-intact"], paged["school-p-changed"]
    rehashed, swapped = paged["school-p-rehashed"], paged["school-p-swapped"]
    assert intact["intact"] is True and intact["intact_up_to"] == 50 and intact["records"] == 50
    assert intact["checkpoints_verified"] == 2  # the one in the database and the copy outside it
    assert changed["problem"]["kind"] == "changed" and changed["problem"]["seq"] == 23, changed
    assert changed["intact_up_to"] == 22 and changed["problem"]["position"] == 22
    assert "only 22 are intact" in changed["checkpoint_problem"]
    assert rehashed["problem"]["kind"] == "changed" and rehashed["problem"]["seq"] == 21, rehashed
    assert rehashed["intact_up_to"] == 20
    assert swapped["problem"]["kind"] == "reordered" and swapped["problem"]["seq"] in (14, 15), swapped
    assert swapped["intact_up_to"] == 13


async def test_search_folds_the_log_a_page_at_a_time_into_the_same_states(stack, isolation, tmp_path):
    settings = audit_settings(isolation, stack, tmp_path)
    school = "school-p-search"
    async with running(settings) as (app, _):
        pool = app.state.runtime.pool
        for n in range(3):  # 21 records: six pages of 4
            await log_events(pool, incident_events(school, f"inc-search-{n}", minutes_to_ack=5 + n))
        async with pool.acquire() as conn:
            paged = await folded_states(conn, school, page_size=4)
            whole = rebuild(e.event for e in await load_events(conn, school))
            live = await live_states(conn, school)
            sizes = [len(p) async for p in logged_pages(conn, school, page_size=4)]
    assert sizes == [4, 4, 4, 4, 4, 1]
    assert paged == whole == live
    assert sorted(paged) == ["inc-search-0", "inc-search-1", "inc-search-2"]
    assert [s["events"] for s in paged.values()] == [7, 7, 7]
