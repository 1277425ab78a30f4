"""Export of a school's log for a period, in the layout audit.offline_verify checks without the database.

The offline verifier checks the chain from its first record, so an export holds records 1..N, where N is
the last record recorded before the period's end; manifest.json says which seqs fall inside the period."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from audit.checkpoint import LogSigner
from audit.offline_verify import write_export
from audit.store import load_records
from common.db import Connection


async def export_period(
    conn: Connection, signer: LogSigner, school_id: str, out: Path, *,
    start: datetime | None = None, end: datetime | None = None,
) -> dict[str, Any]:
    records = sorted(await load_records(conn, school_id), key=lambda r: r.seq)
    if end is not None:
        records = [r for r in records if r.recorded_at < end]
    in_period = [r.seq for r in records if start is None or r.recorded_at >= start]
    notes = [r["note"] for r in await conn.fetch(
        "SELECT note FROM audit_checkpoints WHERE school_id = $1 AND size <= $2 ORDER BY size",
        school_id, len(records),
    )]
    write_export(out, records, notes, signer.verifier.encode())
    manifest = {
        "school_id": school_id, "from": start.isoformat() if start else None, "to": end.isoformat() if end else None,
        "records": len(records), "checkpoints": len(notes),
        "period_seqs": [in_period[0], in_period[-1]] if in_period else None,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
