"""Verification of a school's log as stored: the chain in order of arrival, then every signed
checkpoint (signature, and root over the records it covers), then the copy kept outside the database.

The log is read in keyset pages and the Merkle roots the checkpoints need are folded as the records go by,
so memory holds a page or two and O(log n) subtree hashes, however long the log."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from audit.chain import AuditRecord, ChainHead, VerificationResult, verify_chain
from audit.checkpoint import Checkpoint, CheckpointError, NoteVerifier, open_checkpoint
from audit.config import AuditSettings
from audit.merkle import EMPTY_ROOT, node_hash
from audit.store import record_pages
from common.db import Connection

PAGE_SIZE = 5000


class PrefixRoots:
    """RFC 6962 roots of the first n leaves for chosen n, from leaves fed one at a time (a stack of complete
    subtrees: O(log n) hashes held, never the tree)."""

    def __init__(self, sizes: set[int]) -> None:
        self._wanted = sizes
        self._stack: list[tuple[int, bytes]] = []  # (leaf count, hash), counts strictly decreasing powers of two
        self.size = 0
        self.roots: dict[int, bytes] = {0: EMPTY_ROOT} if 0 in sizes else {}

    def add(self, leaf: bytes) -> None:
        count, node = 1, leaf
        while self._stack and self._stack[-1][0] == count:
            left_count, left = self._stack.pop()
            count, node = left_count + count, node_hash(left, node)
        self._stack.append((count, node))
        self.size += 1
        if self.size in self._wanted:
            root = self._stack[-1][1]
            for _, left in reversed(self._stack[:-1]):
                root = node_hash(left, root)
            self.roots[self.size] = root


def check_checkpoints(
    opened: list[Checkpoint | CheckpointError], roots: dict[int, bytes], intact: int
) -> tuple[int, str | None]:
    """(checkpoints verified, first problem) for opened notes, oldest first, over `intact` records whose
    prefix roots (at each checkpoint's size up to `intact`) are in `roots`."""
    for i, cp in enumerate(opened, 1):
        if isinstance(cp, CheckpointError):
            return i - 1, f"checkpoint {i}: {cp}"
        if cp.size > intact:
            return i - 1, (f"checkpoint {i} covers {cp.size} records but only {intact} are intact: "
                           "records it signed were changed or removed")
        if roots[cp.size] != cp.root_hash:
            return i - 1, f"checkpoint {i}: its root is not the Merkle root of the first {cp.size} records"
    return len(opened), None


def _open(note: str, verifier: NoteVerifier) -> Checkpoint | CheckpointError:
    try:
        return open_checkpoint(note, verifier)
    except CheckpointError as exc:
        return exc


async def verify_records(
    conn: Connection, school_id: str, prefix: PrefixRoots, *, page_size: int = PAGE_SIZE
) -> VerificationResult:
    """The chain of `school_id` in order of arrival, a page at a time; every record found intact is fed to
    `prefix` (for an intact prefix, arrival order is seq order). A problem is diagnosed over the last intact
    record, the rest of its page and the next page, so a record moved up to a page away is found moved."""
    last: AuditRecord | None = None  # the last record found intact, carried into the next window
    done = 0  # records found intact so far
    pages = record_pages(conn, school_id, page_size)
    async for page in pages:
        window = [last, *page] if last is not None else page
        start = ChainHead(school_id, last.seq - 1, last.prev_hash) if last is not None else None
        result = verify_chain(window, start=start)
        if result.problem is None:
            for r in page:
                prefix.add(r.leaf_hash)
            done, last = done + len(page), page[-1]
            continue
        lookahead: list[AuditRecord] = await anext(pages, [])
        await pages.aclose()
        carried = 1 if last is not None else 0
        offset = done - carried  # where the window begins in the whole log
        result = verify_chain([*window, *lookahead], start=start, offset=offset)
        for r in window[carried:result.checked]:
            prefix.add(r.leaf_hash)
        return replace(result, checked=offset + result.checked)
    return VerificationResult(last.seq if last is not None else 0, done)


async def verify_school(conn: Connection, settings: AuditSettings, verifier: NoteVerifier, school_id: str,
                        *, page_size: int = PAGE_SIZE) -> dict[str, Any]:
    from audit.checkpoints import checkpoint_file  # local: checkpoints imports store as well

    notes = [r["note"] for r in await conn.fetch(
        "SELECT note FROM audit_checkpoints WHERE school_id = $1 ORDER BY size", school_id
    )]
    kept = checkpoint_file(settings, school_id)
    if kept.exists():
        notes.append(kept.read_text(encoding="utf-8"))
    opened = [_open(note, verifier) for note in notes]
    prefix = PrefixRoots({cp.size for cp in opened if isinstance(cp, Checkpoint)})
    result = await verify_records(conn, school_id, prefix, page_size=page_size)
    checked, checkpoint_problem = check_checkpoints(opened, prefix.roots, result.checked)
    problem = result.problem
    return {
        "school_id": school_id,
        "intact": result.ok and checkpoint_problem is None,
        "intact_up_to": result.intact_up_to,
        "records": await conn.fetchval("SELECT count(*) FROM audit_records WHERE school_id = $1", school_id),
        "message": str(result),
        "problem": None if problem is None else {
            "kind": problem.kind.value, "seq": problem.seq, "position": problem.position,
            "reason": problem.reason,
        },
        "checkpoints_verified": checked,
        "checkpoint_problem": checkpoint_problem,
    }
