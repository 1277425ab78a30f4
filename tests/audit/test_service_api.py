"""The audit service's queries, replay and export on the real database (and broker for re-publishing)."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from support.helpers import read_topic

from audit.checkpoint import NoteVerifier, open_checkpoint
from audit.checkpoints import checkpoint_all
from audit.cli import run_cli
from audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from audit.offline_verify import ExportProblem, verify_export
from common.events import new_event
from common.topics import EventType

from .service_support import (
    CRIME_REFERENCE,
    PUPIL_NAME,
    PUPIL_UPN,
    T0,
    audit_settings,
    bearer,
    incident_events,
    log_events,
    running,
)


async def test_governors_see_timelines_without_pupil_fields_and_are_refused_them(stack, isolation, tmp_path):
    settings = audit_settings(isolation, stack, tmp_path)
    async with running(settings) as (app, client):
        events = incident_events("school-g", "inc-g1")
        not_told = new_event(EventType.INCIDENT_ACTION_RECORDED, source="tests", subject="inc-g1", schoolid="school-g",
                             data={"action_id": "inc-g1-a2", "incident_id": "inc-g1", "action": "parents_not_informed",
                                   "by": {"role": "dsl"}, "at": T0.isoformat(),
                                   "reason": f"Social care advised: telling {PUPIL_NAME}'s father puts her at risk."})
        await log_events(app.state.runtime.pool, [*events, not_told])
        governor = bearer(settings, "governor", "school-g")
        resp = await client.get("/v1/audit/incidents/inc-g1/timeline", headers=governor)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert [e["type"].rsplit(".", 2)[-2] for e in body["entries"]] == [
            "reported", "triaged", "requested", "delivered", "escalated", "acknowledged", "action-recorded",
            "action-recorded"]
        told = body["entries"][2]["summary"]
        assert told["told"] == "dsl" and told["channels"] == ["sms"]
        assert body["entries"][5]["summary"]["acknowledged_by"] == "dsl"
        text = resp.text
        assert PUPIL_NAME not in text and PUPIL_UPN not in text and "Year 6" in text
        # An action's free text and crime reference are for the people who need pupil details, as in intake.
        assert "Social care advised" not in text and CRIME_REFERENCE not in text
        assert body["entries"][6]["event"]["data"]["agency"] == "ceop"
        refused = await client.get("/v1/audit/incidents/inc-g1/timeline?pupil_fields=true", headers=governor)
        assert refused.status_code == 403 and "pupil" in refused.json()["detail"]
        dsl = await client.get("/v1/audit/incidents/inc-g1/timeline?pupil_fields=true",
                               headers=bearer(settings, "dsl", "school-g"))
        assert dsl.status_code == 200 and PUPIL_NAME in dsl.text and PUPIL_UPN in dsl.text
        assert "Social care advised" in dsl.text and CRIME_REFERENCE in dsl.text
        teacher = await client.get("/v1/audit/incidents/inc-g1/timeline",
                                   headers=bearer(settings, "teacher", "school-g"))
        assert teacher.status_code == 403
        assert (await client.get("/v1/audit/incidents/inc-g1/timeline")).status_code == 401
        other_school = await client.get("/v1/audit/incidents/inc-g1/timeline",
                                        headers=bearer(settings, "dsl", "school-other"))
        assert other_school.status_code == 404  # a token only reads its own school's log


async def test_every_read_of_the_log_is_recorded_in_it(stack, isolation, tmp_path):
    settings = audit_settings(isolation, stack, tmp_path)
    async with running(settings) as (app, client):
        pool = app.state.runtime.pool
        await log_events(pool, incident_events("school-r", "inc-r1"))
        headers = bearer(settings, "governor", "school-r", person="gov-42")
        assert (await client.get("/v1/audit/incidents/inc-r1/timeline", headers=headers)).status_code == 200
        assert (await client.get("/v1/audit/incidents?risk_area=contact", headers=headers)).status_code == 200
        assert (await client.get("/v1/audit/verify", headers=headers)).status_code == 200
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT seq, event FROM audit_records WHERE school_id = 'school-r' AND topic = 'audit.reads'"
                " ORDER BY seq"
            )
        reads = [json.loads(r["event"]) for r in rows]
        assert [r["action"] for r in reads] == ["timeline", "search", "verify"]
        assert all(r["by"] == {"person_id": "gov-42", "role": "governor"} for r in reads)
        assert reads[0]["params"] == {"incident_id": "inc-r1", "pupil_fields": False}
        assert [r["seq"] for r in rows] == [8, 9, 10]  # appended to the same chain, which still verifies
        verify = (await client.get("/v1/audit/verify", headers=headers)).json()
        assert verify["intact"] is True and verify["intact_up_to"] == 10


async def test_search_and_termly_report_as_json_and_csv(stack, isolation, tmp_path):
    settings = audit_settings(isolation, stack, tmp_path)
    async with running(settings) as (app, client):
        events = (incident_events("school-t", "inc-t1", minutes_to_ack=4)
                  + incident_events("school-t", "inc-t2", minutes_to_ack=10)
                  + incident_events("school-t", "inc-t3", minutes_to_ack=20)[:3])
        await log_events(app.state.runtime.pool, events)
        headers = bearer(settings, "governor", "school-t")
        found = (await client.get("/v1/audit/incidents", params={"status": "acknowledged"}, headers=headers)).json()
        assert sorted(i["incident_id"] for i in found["incidents"]) == ["inc-t1", "inc-t2"]
        everything = (await client.get("/v1/audit/incidents", params={
            "from": T0.isoformat(), "to": (T0 + timedelta(days=1)).isoformat(), "class": "illegal",
            "risk_area": "contact"}, headers=headers)).json()["incidents"]
        assert [i["incident_id"] for i in everything] == ["inc-t1", "inc-t2", "inc-t3"]
        assert {i["status"] for i in everything} == {"acknowledged", "notified"}
        report = (await client.get("/v1/audit/reports/termly", params={
            "from": T0.isoformat(), "to": (T0 + timedelta(days=90)).isoformat()}, headers=headers)).json()
        assert report["incidents"] == 3
        assert report["by_class"] == {"illegal": 3} and report["by_risk_area"] == {"contact": 3}
        ack = report["time_to_first_acknowledgement_seconds"]
        assert ack == {"acknowledged": 2, "p50": 240.0, "p90": 600.0}
        assert report["escalations"] == 2 and report["referrals"] == 2
        assert report["referrals_by_agency"] == {"ceop": 2}
        csv = await client.get("/v1/audit/reports/termly", params={"format": "csv"}, headers=headers)
        assert csv.headers["content-type"].startswith("text/csv")
        assert "by_class,illegal,3" in csv.text and "time_to_first_acknowledgement_seconds,p90,600.0" in csv.text


async def test_replay_rebuilds_the_live_state_prints_and_republishes_in_order(stack, isolation, tmp_path):
    settings = audit_settings(isolation, stack, tmp_path)
    async with running(settings) as (app, client):
        events = incident_events("school-p", "inc-p1") + incident_events("school-p", "inc-p2")
        await log_events(app.state.runtime.pool, events)
        check = (await client.get("/v1/audit/replay/check", headers=bearer(settings, "dsl", "school-p"))).json()
        assert check["equal"] is True and check["incidents"] == 2
        out = io.StringIO()
        assert await run_cli(["replay", "--school", "school-p", "--rebuild"], settings, out) == 0
        assert "rebuilt 2 incident(s) from the log: equal to the live projection" in out.getvalue()
        out = io.StringIO()
        assert await run_cli(["replay", "--school", "school-p", "--incident", "inc-p2"], settings, out) == 0
        lines = out.getvalue().splitlines()
        assert len(lines) == 7 and all("incident=inc-p2" in line for line in lines)
        assert [int(line.split()[0]) for line in lines] == list(range(8, 15))
        target = f"{isolation}.replay.fresh"
        out = io.StringIO()
        assert await run_cli(["replay", "--school", "school-p", "--incident", "inc-p1", "--publish", target],
                             settings, out) == 0
        republished = await read_topic(stack.bootstrap, target, expect=7)
        assert [json.loads(v)["id"] for v, _ in republished] == [e.id for e in events[:7]]
        # a live projection changed behind the log's back is caught by the rebuild
        async with app.state.runtime.pool.acquire() as conn:
            await conn.execute("UPDATE incident_projection SET state = jsonb_set(state, '{escalations}', '0')"
                               " WHERE incident_id = 'inc-p1'")
        out = io.StringIO()
        assert await run_cli(["replay", "--school", "school-p", "--rebuild"], settings, out) == 1
        assert "DIFFERENT" in out.getvalue() and "escalations" in out.getvalue()


async def test_an_export_verifies_offline_and_one_changed_byte_is_refused(stack, isolation, tmp_path):
    settings = audit_settings(isolation, stack, tmp_path)
    async with running(settings) as (app, client):
        pool = app.state.runtime.pool
        await log_events(pool, incident_events("school-e", "inc-e1")[:4])
        async with pool.acquire() as conn:
            await checkpoint_all(conn, settings, app.state.signer)
        await log_events(pool, incident_events("school-e", "inc-e1")[4:])
        key = (await client.get("/v1/audit/public-key")).json()
    out_dir = tmp_path / "export"
    out = io.StringIO()
    assert await run_cli(["export", "--school", "school-e", "--out", str(out_dir)], settings, out) == 0
    assert (out_dir / "public_key.txt").read_text().strip() == key["verifier_key"]
    assert verify_export(out_dir, key["verifier_key"]) == "intact: 8 records, 2 checkpoints"
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["records"] == 8 and manifest["period_seqs"] == [1, 8]
    # The export itself is a read of the log, recorded in it before the records were written out.
    last = json.loads((out_dir / "records.jsonl").read_text().splitlines()[-1])
    read = last["event"]
    assert (read["kind"], read["action"], read["by"]["role"]) == ("audit_read", "cli.export", "operator")
    assert read["by"]["person_id"].startswith("cli:")
    # A time without an offset is UTC (it raised TypeError against the log's aware times).
    dated = tmp_path / "export-dated"
    assert await run_cli(["export", "--school", "school-e", "--out", str(dated), "--to", "2999-01-01"],
                         settings, io.StringIO()) == 0
    assert json.loads((dated / "manifest.json").read_text())["records"] == 9
    data = bytearray((out_dir / "records.jsonl").read_bytes())
    at = data.index(b'"dsl"') + 2
    data[at] = ord("x")
    (out_dir / "records.jsonl").write_bytes(bytes(data))
    with pytest.raises(ExportProblem, match="changed"):
        verify_export(out_dir, key["verifier_key"])


async def test_a_record_is_proven_in_a_signed_checkpoint_and_checkpoints_consistent(stack, isolation, tmp_path):
    settings = audit_settings(isolation, stack, tmp_path)
    async with running(settings) as (app, client):
        pool = app.state.runtime.pool
        events = incident_events("school-m", "inc-m1") + incident_events("school-m", "inc-m2")
        await log_events(pool, events[:5])
        async with pool.acquire() as conn:
            await checkpoint_all(conn, settings, app.state.signer)
        await log_events(pool, events[5:])
        async with pool.acquire() as conn:
            await checkpoint_all(conn, settings, app.state.signer)
        headers = bearer(settings, "governor", "school-m")
        key = NoteVerifier.parse((await client.get("/v1/audit/public-key")).json()["verifier_key"])
        body = (await client.get("/v1/audit/proofs/inclusion", params={"seq": 9}, headers=headers)).json()
        latest = open_checkpoint(body["checkpoint"], key)
        assert latest.size == body["tree_size"] == 14
        async with pool.acquire() as conn:
            record_hash = bytes(await conn.fetchval(
                "SELECT hash FROM audit_records WHERE school_id = 'school-m' AND seq = 9"))
        verify_inclusion(leaf_hash(record_hash), 8, 14, [bytes.fromhex(h) for h in body["proof"]], latest.root_hash)
        assert len(body["proof"]) <= 4
        first = (await client.get("/v1/audit/proofs/inclusion", params={"seq": 1, "size": 5}, headers=headers)).json()
        old = open_checkpoint(first["checkpoint"], key)
        cons = (await client.get("/v1/audit/proofs/consistency", params={"old": 5}, headers=headers)).json()
        verify_consistency(5, 14, old.root_hash, latest.root_hash, [bytes.fromhex(h) for h in cons["proof"]])
