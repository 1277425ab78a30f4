"""The audit log of one school as a hash chain: each record commits to its content and to the record before it.

Canonical bytes. `canonical_json(value)` is JSON with object keys sorted, no whitespace (separators "," and
":"), non-ASCII characters written as themselves, encoded UTF-8 (Python's json with sort_keys=True,
separators=(",", ":"), ensure_ascii=False, allow_nan=False). For strings, integers, booleans and null this is
the same text as RFC 8785 (JCS); event payloads carry no floats.

An event is stored as its canonical bytes: `canonical_json(event.model_dump(mode="json"))`. A record's
canonical bytes are `canonical_json` of its content, an object with exactly these keys:

    {"event": <the event, as the JSON object its canonical bytes spell>,
     "event_id": str, "recorded_at": "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC, always 6 fraction digits),
     "school_id": str, "seq": int (1-based, per school), "topic": str}

and, because the event bytes are already canonical, they appear inside the record's bytes verbatim.

Hash. `hash = SHA-256(prev_hash || canonical bytes)`, where `prev_hash` is the 32-byte hash of the school's
previous record, or 32 zero bytes (`GENESIS`) for seq 1. A changed byte anywhere changes that record's hash
and breaks the link from every later record. The Merkle tree of the school's log (audit.merkle) has one
leaf per record, in seq order, whose input is the record's 32-byte hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]

from audit.merkle import leaf_hash
from common.events import CloudEvent

GENESIS = bytes(32)


def _canonical_dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


if c_make_encoder is not None:
    _default = json.JSONEncoder().default  # raises TypeError for what JSON cannot hold, as json.dumps does

    def _canonical_text(value: object) -> str:
        # What json.dumps(value, <the options above>) runs, without building a JSONEncoder and resolving its
        # options on every call: the same C encoder with the same arguments, so the same text.
        return "".join(c_make_encoder({}, _default, encode_basestring, None, ":", ",", True, False, False)(value, 0))
else:  # pragma: no cover - CPython always has the C encoder
    _canonical_text = _canonical_dumps


def canonical_json(value: object) -> bytes:
    return _canonical_text(value).encode()


def canonical_event_bytes(event: CloudEvent) -> bytes:
    return canonical_json(event.model_dump(mode="json"))


def _json_str(value: str) -> bytes:
    # The string encoder json.dumps(ensure_ascii=False) uses, without building an encoder per call.
    return encode_basestring(value).encode()


# The last time formatted and its text: a batch's records share one recorded_at, formatted once.
_last_formatted: tuple[datetime, str] = (datetime(1970, 1, 1, tzinfo=UTC), "1970-01-01T00:00:00.000000Z")


def format_recorded_at(at: datetime) -> str:
    """UTC, microseconds always written: 2025-03-03T09:00:01.000000Z."""
    global _last_formatted  # noqa: PLW0603 - a one-entry cache; a datetime is immutable
    last, text = _last_formatted
    if at is last:
        return text
    offset = at.utcoffset()
    if offset is None:
        raise ValueError("recorded_at must be timezone-aware")
    text = (at.astimezone(UTC) if offset else at).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    _last_formatted = (at, text)
    return text


def record_content_bytes(
    *, school_id: str, seq: int, event_id: str, topic: str, event: bytes, recorded_at: datetime
) -> bytes:
    """The record's canonical bytes, assembled without re-encoding the (already canonical) event."""
    return b"".join(
        (
            b'{"event":',
            event,
            b',"event_id":',
            _json_str(event_id),
            b',"recorded_at":"',
            format_recorded_at(recorded_at).encode(),
            b'","school_id":',
            _json_str(school_id),
            b',"seq":',
            str(seq).encode(),
            b',"topic":',
            _json_str(topic),
            b"}",
        )
    )


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One entry of a school's evidence log. `canonical` is derived from the fields, never stored or loaded,
    so a record rebuilt from changed columns has different canonical bytes and no longer matches its hash."""

    school_id: str
    seq: int
    event_id: str
    topic: str
    event: bytes
    recorded_at: datetime
    prev_hash: bytes
    hash: bytes
    canonical: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        content = record_content_bytes(
            school_id=self.school_id,
            seq=self.seq,
            event_id=self.event_id,
            topic=self.topic,
            event=self.event,
            recorded_at=self.recorded_at,
        )
        object.__setattr__(self, "canonical", content)

    @property
    def head(self) -> ChainHead:
        return ChainHead(self.school_id, self.seq, self.hash)

    @property
    def leaf_hash(self) -> bytes:
        """This record's leaf in the school's Merkle tree: SHA-256(0x00 || hash)."""
        return leaf_hash(self.hash)


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where a school's chain ends: the last seq and its hash (seq 0 and GENESIS for an empty chain)."""

    school_id: str
    seq: int
    hash: bytes

    @classmethod
    def genesis(cls, school_id: str) -> ChainHead:
        return cls(school_id, 0, GENESIS)


def next_record(
    head: ChainHead, *, event_id: str, topic: str, event: bytes, recorded_at: datetime
) -> AuditRecord:
    """The record that follows `head`; `event` must be canonical bytes (see canonical_event_bytes)."""
    record = AuditRecord(
        school_id=head.school_id,
        seq=head.seq + 1,
        event_id=event_id,
        topic=topic,
        event=event,
        recorded_at=recorded_at,
        prev_hash=head.hash,
        hash=b"",
    )
    # Sealed here, before anyone else holds the record: hashing its own canonical bytes saves building them twice.
    object.__setattr__(record, "hash", hashlib.sha256(head.hash + record.canonical).digest())
    return record


def record_event(head: ChainHead, event: CloudEvent, *, recorded_at: datetime) -> AuditRecord:
    """The record of a CloudEvent of `head`'s school, on the topic its type travels on."""
    if event.schoolid != head.school_id:
        raise ValueError(f"event {event.id} belongs to school {event.schoolid}, not {head.school_id}")
    return next_record(
        head, event_id=event.id, topic=event.topic.value, event=canonical_event_bytes(event), recorded_at=recorded_at
    )


class ProblemKind(StrEnum):
    CHANGED = "changed"
    MISSING = "missing"
    REORDERED = "reordered"


@dataclass(frozen=True, slots=True)
class ChainProblem:
    kind: ProblemKind
    seq: int  # the record the problem is located at (for MISSING: the first absent seq)
    position: int  # index in the sequence given to verify_chain
    reason: str

    def __str__(self) -> str:
        return f"record {self.seq} {self.kind.value}: {self.reason}"


@dataclass(frozen=True, slots=True)
class VerificationResult:
    intact_up_to: int  # the last seq verified intact; the start seq when nothing was
    checked: int  # records verified intact
    problem: ChainProblem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def __str__(self) -> str:
        if self.problem is None:
            return f"intact up to {self.intact_up_to}"
        return f"{self.problem} (intact up to {self.intact_up_to})"


def verify_chain(
    records: Iterable[AuditRecord], *, start: ChainHead | None = None, offset: int = 0
) -> VerificationResult:
    """Recompute the chain in the order given and report the first record that does not match.

    Without `start` the records must begin at seq 1; with it they continue from that head. Positions in a
    problem count from `offset` (where `records` begins in a longer read, such as one page of the log).
    """
    rows: Sequence[AuditRecord] = records if isinstance(records, Sequence) else list(records)
    if start is None:
        if not rows:
            return VerificationResult(0, 0)
        start = ChainHead.genesis(rows[0].school_id)
    school, prev, expected = start.school_id, start.hash, start.seq + 1
    sha256 = hashlib.sha256
    for r in rows:  # the hot loop: compare, hash, compare; diagnosis only once something is wrong
        if (
            r.seq != expected
            or r.prev_hash != prev
            or r.school_id != school
            or sha256(prev + r.canonical).digest() != r.hash
        ):
            return _diagnose(rows, start, expected - start.seq - 1, offset)
        prev = r.hash
        expected += 1
    return VerificationResult(expected - 1, expected - 1 - start.seq)


def _diagnose(rows: Sequence[AuditRecord], start: ChainHead, i: int, offset: int) -> VerificationResult:
    r, expected = rows[i], start.seq + 1 + i
    previous = rows[i - 1] if i > 0 else None

    def found(kind: ProblemKind, seq: int, reason: str, at: int = i) -> VerificationResult:
        intact = start.seq + at
        return VerificationResult(intact, at, ChainProblem(kind, seq, offset + at, reason))

    if r.school_id != start.school_id:
        return found(ProblemKind.CHANGED, r.seq, f"belongs to school {r.school_id!r}, not {start.school_id!r}")
    if r.seq > expected:
        later = next((j for j in range(i + 1, len(rows)) if rows[j].seq == expected), None)
        if later is not None:
            return found(ProblemKind.REORDERED, r.seq,
                         f"found where record {expected} belongs; {expected} is at {offset + later}")
        gap = str(expected) if r.seq == expected + 1 else f"{expected}..{r.seq - 1}"
        return found(ProblemKind.MISSING, expected, f"record(s) {gap} absent; the next present is {r.seq}")
    if r.seq < expected:
        return found(ProblemKind.REORDERED, r.seq, f"found after record {expected - 1}")
    self_consistent = hashlib.sha256(r.prev_hash + r.canonical).digest() == r.hash
    if not self_consistent:
        return found(ProblemKind.CHANGED, r.seq, "its content no longer matches its hash")
    # r is intact in itself but links elsewhere: moved here, or the record before it was rewritten.
    linked = next((x.seq for x in rows if x.hash == r.prev_hash), None)
    if linked is not None:
        return found(ProblemKind.REORDERED, r.seq, f"links to record {linked}, not to record {expected - 1}")
    if previous is not None:
        return found(
            ProblemKind.CHANGED,
            previous.seq,
            f"rewritten and re-hashed: its hash differs from the prev_hash record {r.seq} holds",
            at=i - 1,
        )
    return found(ProblemKind.CHANGED, r.seq, "its prev_hash does not match the chain head it should follow")
