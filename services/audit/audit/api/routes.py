"""GET /v1/audit/...: public key, verification, timelines, search, termly report, replay check."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse, Response

from audit.api.access import Reader, reader, require_pupil_fields
from audit.checkpoint import LogSigner
from audit.config import AuditSettings
from audit.merkle import MerkleTree
from audit.replay import compare_with_live, folded_states, logged_pages
from audit.reports import belongs_to, report_csv, search, termly_report, timeline_entry
from audit.store import load_records, record_read
from audit.verify import verify_school
from common.runtime import Runtime

router = APIRouter(prefix="/v1/audit", tags=["audit"])

ReaderDep = Annotated[Reader, Depends(reader)]


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _signer(request: Request) -> LogSigner:
    signer: LogSigner = request.app.state.signer
    return signer


async def _record(request: Request, who: Reader, action: str, params: dict[str, Any]) -> None:
    async with _runtime(request).pool.acquire() as conn:
        await record_read(conn, school_id=who.school_id, person_id=who.claims.person_id, role=who.claims.role,
                          action=action, params=params)


@router.get("/public-key")
async def public_key(request: Request) -> dict[str, str]:
    """The key that signs the checkpoints: as a signed-note verifier key, and as raw Ed25519 (base64)."""
    signer = _signer(request)
    return {
        "key_name": signer.name,
        "verifier_key": signer.verifier.encode(),
        "ed25519_public_key": base64.b64encode(signer.private_key.public_key().public_bytes_raw()).decode(),
    }


@router.get("/verify")
async def verify(request: Request, who: ReaderDep) -> dict[str, Any]:
    """Recompute the reader's school's chain and checkpoints: "intact up to N" or the first bad record."""
    settings: AuditSettings = request.app.state.settings
    async with _runtime(request).pool.acquire() as conn:
        result = await verify_school(conn, settings, _signer(request).verifier, who.school_id)
    await _record(request, who, "verify", {})
    return result


@router.get("/incidents/{incident_id}/timeline")
async def timeline(
    request: Request, who: ReaderDep, incident_id: str, pupil_fields: bool = False
) -> dict[str, Any]:
    """Every event of an incident in log order: who was told, when, by which channel, who acknowledged."""
    full = require_pupil_fields(who, pupil_fields)
    entries: list[dict[str, Any]] = []
    async with _runtime(request).pool.acquire() as conn:
        async for page in logged_pages(conn, who.school_id):
            entries += [timeline_entry(r.seq, r.topic, r.recorded_at, r.event, full=full)
                        for r in page if belongs_to(r.event, incident_id)]
    if not entries:
        raise HTTPException(404, f"no events of incident {incident_id} in this school's log")
    await _record(request, who, "timeline", {"incident_id": incident_id, "pupil_fields": full})
    return {"incident_id": incident_id, "pupil_fields": full, "entries": entries}


@router.get("/incidents")
async def find_incidents(
    request: Request, who: ReaderDep,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    incident_class: Annotated[str | None, Query(alias="class")] = None,
    risk_area: str | None = None, status: str | None = None,
) -> dict[str, Any]:
    """Incidents by period reported, class, risk area and status (as folded from the log)."""
    async with _runtime(request).pool.acquire() as conn:
        states = await folded_states(conn, who.school_id)
    found = search(states, start=start, end=end, incident_class=incident_class, risk_area=risk_area, status=status)
    await _record(request, who, "search", {"from": start.isoformat() if start else None,
                                           "to": end.isoformat() if end else None, "class": incident_class,
                                           "risk_area": risk_area, "status": status})
    return {"incidents": found}


@router.get("/reports/termly", response_model=None)
async def termly(
    request: Request, who: ReaderDep,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    format: Literal["json", "csv"] = "json",
) -> Response | dict[str, Any]:
    """Counts by class and risk area, time to first acknowledgement (p50/p90), escalations, overdue
    reminders and referrals, for incidents reported in the period."""
    async with _runtime(request).pool.acquire() as conn:
        states = await folded_states(conn, who.school_id)
    report = termly_report(search(states, start=start, end=end), start, end)
    await _record(request, who, "termly_report", {"from": start.isoformat() if start else None,
                                                  "to": end.isoformat() if end else None, "format": format})
    if format == "csv":
        return PlainTextResponse(report_csv(report), media_type="text/csv")
    return report


@router.get("/replay/check")
async def replay_check(request: Request, who: ReaderDep, incident_id: str | None = None) -> dict[str, Any]:
    """Rebuild incident state from the log from scratch and compare it with the live projection."""
    async with _runtime(request).pool.acquire() as conn:
        result = await compare_with_live(conn, who.school_id, incident_id=incident_id)
    await _record(request, who, "replay_check", {"incident_id": incident_id})
    shown: dict[str, Any] = json.loads(json.dumps(result, default=str))
    return shown


async def _signed_tree(request: Request, school_id: str, size: int | None) -> tuple[MerkleTree, str, int]:
    """The tree of the school's records in seq order and the signed checkpoint of `size` (latest if None)."""
    async with _runtime(request).pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT size, note FROM audit_checkpoints WHERE school_id = $1 AND ($2::bigint IS NULL OR size = $2)"
            " ORDER BY size DESC LIMIT 1", school_id, size,
        )
        if row is None:
            raise HTTPException(404, "no signed checkpoint of that size for this school")
        records = sorted(await load_records(conn, school_id), key=lambda r: r.seq)
    return MerkleTree(r.leaf_hash for r in records[: row["size"]]), row["note"], row["size"]


@router.get("/proofs/inclusion")
async def inclusion_proof(
    request: Request, who: ReaderDep, seq: Annotated[int, Query(ge=1)], size: int | None = None
) -> dict[str, Any]:
    """That record `seq` is in a signed checkpoint: RFC 6962 audit path (leaf index seq-1; the leaf is
    SHA-256(0x00 || record hash)), oldest-first hex hashes, with the signed note to check it against."""
    tree, note, tree_size = await _signed_tree(request, who.school_id, size)
    if seq > tree_size:
        raise HTTPException(404, f"record {seq} is not yet under checkpoint of size {tree_size}")
    await _record(request, who, "inclusion_proof", {"seq": seq, "size": tree_size})
    return {"seq": seq, "leaf_index": seq - 1, "tree_size": tree_size, "leaf_hash": tree.leaf(seq - 1).hex(),
            "proof": [h.hex() for h in tree.inclusion_proof(seq - 1, tree_size)], "checkpoint": note}


@router.get("/proofs/consistency")
async def consistency_proof(
    request: Request, who: ReaderDep, old: Annotated[int, Query(ge=0)], new: int | None = None
) -> dict[str, Any]:
    """That the signed checkpoint of size `new` (latest if omitted) extends the one of size `old`."""
    tree, note, tree_size = await _signed_tree(request, who.school_id, new)
    if old > tree_size:
        raise HTTPException(422, f"size {old} is larger than the checkpoint's {tree_size}")
    await _record(request, who, "consistency_proof", {"old": old, "new": tree_size})
    return {"old_size": old, "new_size": tree_size, "proof": [h.hex() for h in tree.consistency_proof(old, tree_size)],
            "checkpoint": note}
