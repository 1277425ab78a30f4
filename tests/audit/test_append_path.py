"""The append path's shortcuts keep their promises: events redelivered after a crash between the log's commit
and the offset commit land once (chain and live projection alike); the projection's in-place fold agrees with
`apply`, which leaves its input alone; a batch's shared recorded_at is formatted like any other; canonical JSON
is exactly json.dumps with the canonical options; and the audit process's collector tuning."""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone

import asyncpg
import pytest
from support.helpers import eventually, produce

from audit.chain import canonical_json, format_recorded_at, verify_chain
from audit.projection import apply, fold, incident_id_of, rebuild
from audit.replay import live_states, rebuilt_states
from audit.store import load_records, store_deliveries
from common.events import CloudEvent

from .service_support import audit_settings, incident_events, log_events, running
from .test_batch_append import delivery


async def _publish(bootstrap: str, isolation: str, events: list[CloudEvent]) -> None:
    for e in events:
        await produce(bootstrap, f"{isolation}.{e.topic.value}", [e.to_bytes()], key=e.key)


async def test_events_redelivered_after_a_crash_before_the_offset_commit_land_once(stack, isolation, tmp_path):
    """A first audit process appends what it consumed and dies before committing its offsets: the next one
    (here: a consumer group with no offsets and no inbox rows, so nothing but the log itself knows) reads
    those events again in batches with new ones; the log keeps each once, every chain goes on unbroken, and
    the live projection counts each event once."""
    schools = ["school-crash-a", "school-crash-b"]
    lives = {s: [incident_events(s, f"inc-{s}-{i}") for i in range(3)] for s in schools}
    first = [life[0] for s in schools for life in lives[s]]  # every incident reported
    second = [life[k] for s in schools for life in lives[s] for k in (1, 2)]  # triaged, DSL told
    settings = audit_settings(isolation, stack, tmp_path)
    schema = f"{isolation}_audit"

    def appended(n: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            conn = await asyncpg.connect(stack.admin_dsn)
            try:
                return bool(await conn.fetchval(f"SELECT count(*) FROM {schema}.audit_records") == n)  # noqa: S608
            finally:
                await conn.close()
        return check

    async with running(settings, consume=True):
        await _publish(stack.bootstrap, isolation, first)
        await eventually(appended(len(first)), timeout=60, what="the first process's appends")
    await _publish(stack.bootstrap, isolation, second)
    restarted = audit_settings(isolation, stack, tmp_path, service_name="audit-after-crash")
    async with running(restarted, consume=True) as (app, _):
        await eventually(appended(len(first) + len(second)), timeout=60, what="the second's appends")
        async with app.state.runtime.pool.acquire() as conn:
            # the second process has read every event, the first ones again, and recorded each in its inbox
            assert await conn.fetchval(
                "SELECT count(*) FROM inbox WHERE consumer = $1", f"{isolation}.audit-after-crash"
            ) == len(first) + len(second)
            stored = {s: await load_records(conn, s) for s in schools}
            projections = {s: (await live_states(conn, s), await rebuilt_states(conn, s)) for s in schools}
    for school in schools:
        records = stored[school]
        expected = {e.id for life in lives[school] for e in life[:3]}
        assert sorted(r.event_id for r in records) == sorted(expected), school  # each once
        assert [r.seq for r in records] == list(range(1, len(expected) + 1)), school
        assert verify_chain(records).intact_up_to == len(expected), school
        live, rebuilt = projections[school]
        assert live == rebuilt, school
        assert {incident: state["events"] for incident, state in live.items()} == {
            life[0].subject: 3 for life in lives[school]
        }, school


OLD_ROW = "SELECT state::text, last_seq FROM incident_projection WHERE incident_id = 'inc-old'"


async def test_projection_rows_read_with_the_heads_are_written_only_for_the_events_appended(
    stack, isolation, tmp_path
):
    """The batch's projection rows are read (and locked) with the chain heads, for every incident its events
    name; an incident whose events in the batch are all repeats keeps its row as it was, one with new events
    goes on from its stored state, and a new one starts from nothing."""
    settings = audit_settings(isolation, stack, tmp_path)
    school = "school-rows"
    old = incident_events(school, "inc-old")  # its first two events are in the log already, and no more
    going = incident_events(school, "inc-going")  # its first two are in the log; the batch brings two more
    new = incident_events(school, "inc-new")
    async with running(settings) as (app, _):
        pool = app.state.runtime.pool
        await log_events(pool, [*old[:2], *going[:2]])
        async with pool.acquire() as conn:
            before = await conn.fetchrow(OLD_ROW)
            async with conn.transaction():
                await store_deliveries([delivery(e) for e in [old[1], going[2], old[0], new[0], going[3]]], conn)
            after = await conn.fetchrow(OLD_ROW)
            seqs = dict(await conn.fetch("SELECT incident_id, last_seq FROM incident_projection"))
            live, rebuilt = await live_states(conn, school), await rebuilt_states(conn, school)
            records = await load_records(conn, school)
    assert [r.event_id for r in records] == [e.id for e in [*old[:2], *going[:2], going[2], new[0], going[3]]]
    assert verify_chain(records).intact_up_to == 7
    assert tuple(after) == tuple(before) and before["last_seq"] == 2
    assert seqs == {"inc-old": 2, "inc-going": 7, "inc-new": 6}
    assert live == rebuilt
    assert {i: s["events"] for i, s in live.items()} == {"inc-old": 2, "inc-going": 4, "inc-new": 1}


def test_apply_leaves_its_input_alone_and_fold_changes_it_in_place_to_the_same_state() -> None:
    events = [e.model_dump(mode="json") for e in incident_events("school-fold", "inc-fold")]
    states = rebuild(events[:3])
    state = states["inc-fold"]
    kept = copy.deepcopy(state)
    for event in events[3:]:
        after = apply(state, event)
        assert state == kept  # apply copied
        assert after is not None and after != state
        incident = incident_id_of(event)
        assert incident is not None
        folded = fold(state, incident, event)
        assert folded is state and state == after  # fold changed the state it was given, to the same result
        kept = copy.deepcopy(state)
    assert state == rebuild(events)["inc-fold"]
    assert fold(None, "inc-new", events[0])["incident_id"] == "inc-new"


def test_recorded_at_is_formatted_the_same_whether_or_not_it_was_just_formatted() -> None:
    a = datetime(2026, 1, 12, 9, 0, 1, 5, tzinfo=UTC)
    b = datetime(2026, 1, 12, 10, 0, 1, 5, tzinfo=timezone(timedelta(hours=1)))  # the same instant as a
    c = datetime(2026, 1, 12, 9, 0, 2, tzinfo=UTC)
    texts = [format_recorded_at(x) for x in (a, a, c, a, b, b, c)]
    assert texts == [
        "2026-01-12T09:00:01.000005Z", "2026-01-12T09:00:01.000005Z", "2026-01-12T09:00:02.000000Z",
        "2026-01-12T09:00:01.000005Z", "2026-01-12T09:00:01.000005Z", "2026-01-12T09:00:01.000005Z",
        "2026-01-12T09:00:02.000000Z",
    ]


@pytest.mark.parametrize("value", [
    {"b": 1, "a": [True, False, None, -7, 2**70], "é": "ünïcode — \u2028 \x00\x1f\"\\/\t", "z": {"y": {}, "x": []}},
    "a string", 12, None, [1.5, 1e16, -0.0], {"emoji": "\U0001f600", "": ""},
])
def test_canonical_json_is_json_dumps_with_the_canonical_options(value: object) -> None:
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    assert canonical_json(value) == expected.encode()


def test_canonical_json_refuses_what_json_dumps_refuses() -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        canonical_json({"x": float("nan")})
    with pytest.raises(TypeError, match="not JSON serializable"):
        canonical_json({"x": object()})
    with pytest.raises(ValueError, match="Circular reference"):
        loop: list[object] = []
        loop.append(loop)
        canonical_json(loop)
