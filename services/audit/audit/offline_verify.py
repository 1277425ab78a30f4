"""Check an exported audit log without the service: `python -m audit.offline_verify EXPORT_DIR --key KEY`.

Standalone on purpose: it needs only the Python standard library and `cryptography`, imports nothing else
of this project, and can be copied out and run as `python offline_verify.py EXPORT_DIR`. It is a second,
independent implementation of the chain, RFC 6962 and signed-note rules, so a bug in the service's own
code cannot hide a change from a reviewer who runs this file.

Export layout (one school's log per directory):

    records.jsonl    one line per record, in seq order from 1, each line exactly
                     canonical_json({"event": <event object>, "event_id": str, "hash": <64 hex>,
                                     "prev_hash": <64 hex>, "recorded_at": "YYYY-MM-DDTHH:MM:SS.ffffffZ",
                                     "school_id": str, "seq": int, "topic": str}) + "\\n"
                     where canonical_json = JSON, keys sorted, no whitespace, UTF-8 (see audit.chain).
    checkpoints.txt  the log's signed checkpoints (C2SP tlog-checkpoint in a C2SP signed-note), oldest
                     first, one empty line after each note.
    public_key.txt   the log's note verifier key, "<name>+<8 hex key id>+<base64(0x01 || Ed25519 key)>\\n".

Checks: every line is canonical; seq runs 1, 2, 3... for a single school; hash = SHA-256(prev_hash ||
canonical_json(the line without "hash" and "prev_hash")) and prev_hash is the previous line's hash (32 zero
bytes for seq 1); each checkpoint is signed by the key in public_key.txt and its root equals the RFC 6962
root over the first <size> records, whose leaves are SHA-256(0x00 || record hash). Exit 0 and print
"intact: N records, M checkpoints"; exit 1 naming the first problem; exit 2 when the export is unreadable.

KEY is the school's verifier key as the reviewer got it from the school, not from the export (the audit service's
`GET /v1/audit/public-key`, `verifier_key`): whoever rewrites an export can sign it again with a key of their own
and put that in public_key.txt, and the export then checks out against itself. `--trust-export-key` checks it
against its own key anyway, and says so.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

RECORDS, CHECKPOINTS, PUBLIC_KEY = "records.jsonl", "checkpoints.txt", "public_key.txt"
RECORD_KEYS = {"event", "event_id", "hash", "prev_hash", "recorded_at", "school_id", "seq", "topic"}
GENESIS = bytes(32)


class ExportProblem(Exception):
    """The first thing found wrong with an export, in words a reviewer can act on."""


class _OutOfPlace(ExportProblem):
    """A seq where another belongs; the caller looks further on to say missing or out of order."""


class ExportableRecord(Protocol):
    @property
    def school_id(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def event_id(self) -> str: ...
    @property
    def topic(self) -> str: ...
    @property
    def event(self) -> bytes: ...
    @property
    def recorded_at(self) -> datetime: ...
    @property
    def prev_hash(self) -> bytes: ...
    @property
    def hash(self) -> bytes: ...


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def write_export(
    directory: str | Path, records: Iterable[ExportableRecord], checkpoints: Iterable[str], public_key: str
) -> Path:
    """Write the layout above: `records` in seq order, `checkpoints` as signed notes oldest first, and
    `public_key` as the note verifier key. Returns the directory."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    with (out / RECORDS).open("wb") as f:
        for r in records:
            event = json.loads(r.event)
            if canonical_json(event) != r.event:
                raise ValueError(f"record {r.seq}: stored event bytes are not canonical JSON")
            line = {
                "event": event,
                "event_id": r.event_id,
                "hash": r.hash.hex(),
                "prev_hash": r.prev_hash.hex(),
                "recorded_at": r.recorded_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "school_id": r.school_id,
                "seq": r.seq,
                "topic": r.topic,
            }
            f.write(canonical_json(line) + b"\n")
    (out / CHECKPOINTS).write_text("".join(note + "\n" for note in checkpoints), encoding="utf-8", newline="")
    (out / PUBLIC_KEY).write_text(public_key.strip() + "\n", encoding="utf-8", newline="")
    return out


def _b64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ExportProblem(f"{what} is not base64") from exc
    if base64.b64encode(raw).decode() != text:  # no stray padding bits: every byte of a note counts
        raise ExportProblem(f"{what} is not canonical base64")
    return raw


def read_verifier(text: str) -> tuple[str, bytes, Ed25519PublicKey]:
    """(name, key id, key) from a verifier key line, after checking the id belongs to the name and key."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3 or not parts[0] or len(parts[1]) != 8:
        raise ExportProblem("public_key.txt is not a note verifier key <name>+<hex id>+<base64 key>")
    name, hex_id, raw = parts[0], parts[1], _b64(parts[2], "public_key.txt key")
    if len(raw) != 33 or raw[0] != 0x01:
        raise ExportProblem("public_key.txt is not an Ed25519 (type 0x01) key")
    kid = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if kid.hex() != hex_id.lower():
        raise ExportProblem(f"public_key.txt: key id {hex_id} does not match its name and key")
    return name, kid, Ed25519PublicKey.from_public_bytes(raw[1:])


def split_notes(text: str) -> list[str]:
    """The notes of checkpoints.txt: each is text lines, an empty line, signature lines, an empty line."""
    notes: list[str] = []
    current: list[str] = []
    in_signatures = False
    for line in text.split("\n"):
        if in_signatures and not line.startswith("\u2014 "):
            notes.append("\n".join(current) + "\n")
            current, in_signatures = [], False
            if line == "":
                continue
        if not in_signatures and line == "" and current:
            in_signatures = True
        current.append(line)
    if any(current):
        raise ExportProblem("checkpoints.txt ends in the middle of a note")
    return notes


def open_checkpoint(note: str, name: str, kid: bytes, key: Ed25519PublicKey) -> tuple[str, int, bytes]:
    """(origin, size, root) of a signed checkpoint once its signature by the given key checks out."""
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise ExportProblem("it contains control characters")
    cut = note.rfind("\n\n")
    text, verified = note[: cut + 1], False
    for line in note[cut + 2 : -1].split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != "\u2014":
            raise ExportProblem(f"malformed signature line {line[:60]!r}")
        blob = _b64(parts[2], "a signature")
        if parts[1] == name and blob[:4] == kid:
            try:
                key.verify(blob[4:], text.encode())
            except InvalidSignature as exc:
                raise ExportProblem(f"the signature by {name} does not match the note") from exc
            verified = True
    if not verified:
        raise ExportProblem(f"no signature by {name} ({kid.hex()})")
    lines = text.split("\n")
    size = lines[1] if len(lines) == 4 else ""
    if not (size.isdecimal() and size.isascii()) or (size != "0" and size.startswith("0")):
        raise ExportProblem("its text is not origin, tree size, root hash")
    root = _b64(lines[2], "its root hash")
    if len(root) != 32:
        raise ExportProblem("its root hash is not 32 bytes")
    return lines[0], int(size), root


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _root(stack: Sequence[tuple[int, bytes]]) -> bytes:
    """RFC 6962 root from the complete subtrees (largest first) of a tree being built leaf by leaf."""
    if not stack:
        return hashlib.sha256(b"").digest()
    node = stack[-1][1]
    for _, left in reversed(stack[:-1]):
        node = _node(left, node)
    return node


def _check_record(
    lineno: int, raw: bytes, expected_seq: int, prev: bytes, school: str | None
) -> dict[str, object]:
    where = f"records.jsonl line {lineno}"
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise ExportProblem(f"{where}: not JSON ({exc})") from exc
    if not isinstance(obj, dict) or set(obj) != RECORD_KEYS:
        raise ExportProblem(f"{where}: not a record (keys must be {sorted(RECORD_KEYS)})")
    if canonical_json(obj) != raw:
        raise ExportProblem(f"{where}: not in canonical form, so it was edited after export")
    seq = obj["seq"]
    if seq != expected_seq:
        raise _OutOfPlace(f"{where}: found seq {seq} where record {expected_seq} belongs")
    if school is not None and obj["school_id"] != school:
        raise ExportProblem(f"{where}: record {seq} belongs to school {obj['school_id']!r}, not {school!r}")
    if obj["prev_hash"] != prev.hex():
        raise ExportProblem(f"{where}: record {seq} does not link to record {seq - 1} (reordered or rewritten)")
    content = {k: v for k, v in obj.items() if k not in ("hash", "prev_hash")}
    if hashlib.sha256(prev + canonical_json(content)).hexdigest() != obj["hash"]:
        raise ExportProblem(f"{where}: record {seq} changed: its content does not match its hash")
    return obj


def _seq_of(line: bytes) -> object:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj.get("seq") if isinstance(obj, dict) else None


def verify_export(directory: str | Path, trusted_key: str | None) -> str:
    """Check the export in `directory` against the verifier key the reviewer trusts (None: against the export's
    own key, which proves consistency only); return the summary or raise ExportProblem (OSError if unreadable)."""
    d = Path(directory)
    exported = (d / PUBLIC_KEY).read_text(encoding="utf-8").strip()
    if trusted_key is not None and exported != trusted_key.strip():
        read_verifier(trusted_key)  # a malformed trusted key is said as such
        shown = "+".join(exported.split("+")[:2])
        raise ExportProblem(f"signed with the key {shown}, not the key you trust: the export may have been"
                            " rewritten and signed again")
    name, kid, key = read_verifier(exported)
    heads: list[tuple[str, int, bytes]] = []
    for i, note in enumerate(split_notes((d / CHECKPOINTS).read_text(encoding="utf-8")), 1):
        try:
            heads.append(open_checkpoint(note, name, kid, key))
        except ExportProblem as exc:
            raise ExportProblem(f"checkpoint {i}: {exc}") from exc
        if heads[-1][0] != heads[0][0]:
            raise ExportProblem(f"checkpoint {i}: origin {heads[-1][0]!r} differs from {heads[0][0]!r}")
        if len(heads) > 1 and heads[-1][1] < heads[-2][1]:
            raise ExportProblem(f"checkpoint {i}: size {heads[-1][1]} is smaller than the one before it")
    by_size: dict[int, list[int]] = {}
    for i, (_, size, _) in enumerate(heads, 1):
        by_size.setdefault(size, []).append(i)
    stack: list[tuple[int, bytes]] = []
    prev, school, n = GENESIS, None, 0
    if 0 in by_size:
        _check_root(heads, by_size.pop(0), stack)
    with (d / RECORDS).open("rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                raise ExportProblem(f"records.jsonl line {lineno}: does not end in a newline (truncated?)")
            try:
                obj = _check_record(lineno, line[:-1], n + 1, prev, school)
            except _OutOfPlace as exc:
                later = next((i for i, rest in enumerate(f, lineno + 1) if _seq_of(rest) == n + 1), None)
                where = f"is out of order: it is on line {later}" if later else "is missing"
                raise ExportProblem(f"{exc}; record {n + 1} {where}") from None
            school, prev, n = str(obj["school_id"]), bytes.fromhex(str(obj["hash"])), n + 1
            count, node = 1, hashlib.sha256(b"\x00" + prev).digest()
            while stack and stack[-1][0] == count:
                count, node = count * 2, _node(stack.pop()[1], node)
            stack.append((count, node))
            if n in by_size:
                _check_root(heads, by_size.pop(n), stack)
    if by_size:
        size = min(by_size)
        raise ExportProblem(f"checkpoint {by_size[size][0]} covers {size} records but the export holds {n}")
    if n and not heads:
        raise ExportProblem(f"{n} records but no signed checkpoint: nothing proves they were not rewritten")
    summary = f"intact: {n} records, {len(heads)} checkpoints"
    if trusted_key is None:
        summary += ("\nnote: checked against the key in the export itself, which shows the export is consistent, not"
                    " who signed it; pass --key with the school's verifier key")
    if heads and heads[-1][1] < n:
        summary += f"\nnote: records {heads[-1][1] + 1}..{n} are chained but not yet under a signed checkpoint"
    return summary


def _check_root(
    heads: Sequence[tuple[str, int, bytes]], indexes: list[int], stack: list[tuple[int, bytes]]
) -> None:
    root = _root(stack)
    for i in indexes:
        if heads[i - 1][2] != root:
            size = heads[i - 1][1]
            raise ExportProblem(f"checkpoint {i}: its root is not the Merkle root of the first {size} records")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audit.offline_verify", description="Check an audit export.")
    parser.add_argument("export_dir")
    trust = parser.add_mutually_exclusive_group(required=True)
    trust.add_argument("--key", help="the school's verifier key, <name>+<key id>+<base64 key>, or a file holding it")
    trust.add_argument("--trust-export-key", action="store_true",
                       help="check against the key inside the export (consistency only)")
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse has printed the usage (or the help)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        key = args.key
        if key is not None and Path(key).is_file():
            key = Path(key).read_text(encoding="utf-8").strip()
        print(verify_export(args.export_dir, key))
    except ExportProblem as exc:
        print(f"NOT intact: {exc}")
        return 1
    except (OSError, UnicodeDecodeError) as exc:
        print(f"cannot read the export: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
