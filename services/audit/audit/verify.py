"""Verification of a school's log as stored: the chain in order of arrival, then every signed
checkpoint (signature, and root over the records it covers), then the copy kept outside the database."""

from __future__ import annotations

from typing import Any

from audit.chain import AuditRecord, verify_chain
from audit.checkpoint import CheckpointError, NoteVerifier, open_checkpoint
from audit.config import AuditSettings
from audit.merkle import MerkleTree
from audit.store import load_records
from common.db import Connection


def check_checkpoints(
    records: list[AuditRecord], notes: list[str], verifier: NoteVerifier, intact_up_to: int
) -> tuple[int, str | None]:
    """(checkpoints verified, first problem) for notes oldest first over an intact prefix of records."""
    tree = MerkleTree(r.leaf_hash for r in records[:intact_up_to])
    for i, note in enumerate(notes, 1):
        try:
            cp = open_checkpoint(note, verifier)
        except CheckpointError as exc:
            return i - 1, f"checkpoint {i}: {exc}"
        if cp.size > tree.size:
            return i - 1, (f"checkpoint {i} covers {cp.size} records but only {tree.size} are intact: "
                           "records it signed were changed or removed")
        if tree.root(cp.size) != cp.root_hash:
            return i - 1, f"checkpoint {i}: its root is not the Merkle root of the first {cp.size} records"
    return len(notes), None


async def verify_school(conn: Connection, settings: AuditSettings, verifier: NoteVerifier, school_id: str
                        ) -> dict[str, Any]:
    from audit.checkpoints import checkpoint_file  # local: checkpoints imports store as well

    records = await load_records(conn, school_id)
    result = verify_chain(records)
    notes = [r["note"] for r in await conn.fetch(
        "SELECT note FROM audit_checkpoints WHERE school_id = $1 ORDER BY size", school_id
    )]
    kept = checkpoint_file(settings, school_id)
    if kept.exists():
        notes.append(kept.read_text(encoding="utf-8"))
    by_seq = sorted(records[: result.checked], key=lambda r: r.seq)
    checked, checkpoint_problem = check_checkpoints(by_seq, notes, verifier, result.checked)
    problem = result.problem
    return {
        "school_id": school_id,
        "intact": result.ok and checkpoint_problem is None,
        "intact_up_to": result.intact_up_to,
        "records": len(records),
        "message": str(result),
        "problem": None if problem is None else {
            "kind": problem.kind.value, "seq": problem.seq, "position": problem.position,
            "reason": problem.reason,
        },
        "checkpoints_verified": checked,
        "checkpoint_problem": checkpoint_problem,
    }
