"""The signing key, and the background loop that signs each school's chain head as a C2SP checkpoint
that provably extends the last one (from the database and from the copy kept outside it)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.chain import verify_chain
from audit.checkpoint import Checkpoint, CheckpointError, LogSigner, open_checkpoint, sign_checkpoint
from audit.config import AuditSettings
from audit.merkle import MerkleTree
from audit.store import load_records, schools
from common.aio import sleep_unless_stopped
from common.db import Connection
from common.runtime import BackgroundLoop, Runtime

log = structlog.get_logger(__name__)


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 signing key; generated on first start and written with mode 0600 (never overwritten)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: use theirs
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return loaded


def signer_for(settings: AuditSettings) -> LogSigner:
    return LogSigner(settings.log_origin, load_or_create_key(settings.signing_key_file))


def origin_of(settings: AuditSettings, school_id: str) -> str:
    return f"{settings.log_origin}/{quote(school_id, safe='')}"


def checkpoint_file(settings: AuditSettings, school_id: str) -> Path:
    return settings.checkpoint_dir / f"{quote(school_id, safe='')}.txt"


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: str


async def latest_checkpoint(conn: Connection, signer: LogSigner, school_id: str) -> SignedCheckpoint | None:
    """The largest checkpoint in the database that this log signed. A row whose signature is not ours (the
    database's writer can insert rows: a forged one, or one from another key) is reported and passed over: it
    must neither stop signing (a forged size beyond the log) nor be what the next checkpoint has to extend."""
    rows = await conn.fetch("SELECT size, note FROM audit_checkpoints WHERE school_id = $1 ORDER BY size DESC",
                            school_id)
    for row in rows:
        try:
            return SignedCheckpoint(open_checkpoint(row["note"], signer.verifier), row["note"])
        except CheckpointError as exc:
            log.error("audit.checkpoint_row_not_ours", school_id=school_id, size=row["size"], error=str(exc))
    return None


def kept_checkpoint(settings: AuditSettings, signer: LogSigner, school_id: str) -> SignedCheckpoint | None:
    """The copy outside the database, if its signature is ours."""
    path = checkpoint_file(settings, school_id)
    if not path.exists():
        return None
    note = path.read_text(encoding="utf-8")
    return SignedCheckpoint(open_checkpoint(note, signer.verifier), note)


async def checkpoint_school(
    conn: Connection, settings: AuditSettings, signer: LogSigner, school_id: str
) -> SignedCheckpoint | None:
    """Sign the school's current head if it grew and provably extends both the last checkpoint in the
    database and the copy kept outside it; None when there is nothing new. Raises CheckpointError (or
    ValueError for a broken chain) instead of signing anything else."""
    async with conn.transaction():
        # One signer per school at a time: two audit processes would otherwise both sign, and the file kept
        # outside the database could go back to the smaller of two checkpoints.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"audit-checkpoint:{school_id}")
        return await _checkpoint_school(conn, settings, signer, school_id)


async def _checkpoint_school(
    conn: Connection, settings: AuditSettings, signer: LogSigner, school_id: str
) -> SignedCheckpoint | None:
    records = await load_records(conn, school_id)
    result = verify_chain(records)
    if not result.ok:
        raise ValueError(f"chain of {school_id} is broken, nothing signed: {result}")
    tree = MerkleTree(r.leaf_hash for r in records)
    previous = [p for p in (await latest_checkpoint(conn, signer, school_id),
                            kept_checkpoint(settings, signer, school_id)) if p is not None]
    last = max(previous, key=lambda p: p.checkpoint.size, default=None)
    if last is not None and last.checkpoint.size >= tree.size:
        if last.checkpoint.size > tree.size:
            raise CheckpointError(f"{school_id}: a checkpoint covers {last.checkpoint.size} records, the log has "
                                  f"{tree.size}: records were removed")
        return None
    new = Checkpoint(origin_of(settings, school_id), tree.size, tree.root())
    for p in previous:  # both copies must be extended, not only the newer one
        proof = tree.consistency_proof(p.checkpoint.size) if p.checkpoint.size > 0 else []
        sign_checkpoint(new, signer, previous=p.checkpoint if p.checkpoint.size else None, consistency_proof=proof)
    note = sign_checkpoint(
        new, signer,
        previous=last.checkpoint if last and last.checkpoint.size else None,
        consistency_proof=tree.consistency_proof(last.checkpoint.size) if last and last.checkpoint.size else [],
    )
    inserted = await conn.fetchval(
        "INSERT INTO audit_checkpoints (school_id, size, root_hash, note) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (school_id, size) DO NOTHING RETURNING true",
        school_id, new.size, new.root_hash, note,
    )
    if not inserted:  # ours would have been found above: this one is not
        raise CheckpointError(f"{school_id}: a checkpoint of size {new.size} not signed by this log is in its place")
    path = checkpoint_file(settings, school_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(note, encoding="utf-8")
    tmp.replace(path)
    return SignedCheckpoint(new, note)


async def checkpoint_all(conn: Connection, settings: AuditSettings, signer: LogSigner) -> int:
    signed = 0
    for school in await schools(conn):
        try:
            if await checkpoint_school(conn, settings, signer, school) is not None:
                signed += 1
        except (CheckpointError, ValueError) as exc:
            log.error("audit.checkpoint_refused", school_id=school, error=str(exc))
    return signed


def checkpoint_loop(settings: AuditSettings, signer: LogSigner) -> BackgroundLoop:
    async def loop(runtime: Runtime, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await sleep_unless_stopped(stop, settings.checkpoint_interval_seconds)
            if stop.is_set():
                return
            try:
                async with runtime.pool.acquire() as conn:
                    await checkpoint_all(conn, settings, signer)
            except Exception:  # noqa: BLE001 - a failed round is logged; the next one tries again
                log.exception("audit.checkpoint_round_failed")

    return loop
