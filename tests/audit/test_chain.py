"""The hash chain: canonical bytes, and verify_chain locating a changed, a missing and a reordered record."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from datetime import timedelta

import pytest

from audit.chain import (
    GENESIS,
    AuditRecord,
    ChainHead,
    ProblemKind,
    canonical_json,
    next_record,
    verify_chain,
)

Chain = Callable[..., list[AuditRecord]]


def test_record_canonical_bytes_are_sorted_compact_utf8_json_of_its_content(chain_of: Chain) -> None:
    r = chain_of(1)[0]
    content = {
        "event": json.loads(r.event),
        "event_id": r.event_id,
        "recorded_at": "2025-03-03T09:00:01.000000Z",
        "school_id": r.school_id,
        "seq": 1,
        "topic": "incidents.reported",
    }
    assert r.canonical == canonical_json(content)
    assert b" " not in r.canonical.replace(b"ICT suite \xe2\x80\x94 PC 12", b"")  # no whitespace, UTF-8 as is
    assert r.prev_hash == GENESIS
    assert r.hash == hashlib.sha256(GENESIS + r.canonical).digest()
    assert canonical_json(json.loads(r.event)) == r.event


def test_intact_chain_reports_its_last_seq(chain_of: Chain) -> None:
    records = chain_of(20)
    result = verify_chain(records)
    assert result.ok and result.intact_up_to == 20 and str(result) == "intact up to 20"
    assert verify_chain(iter(records[5:]), start=records[4].head).intact_up_to == 20
    assert verify_chain([]).ok


def test_a_changed_record_is_located(chain_of: Chain) -> None:
    records = chain_of(10)
    records[6] = dataclasses.replace(records[6], topic="incidents.actions")  # a column edited in place
    result = verify_chain(records)
    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq, result.intact_up_to) == (ProblemKind.CHANGED, 7, 6)


def test_a_changed_event_payload_is_located(chain_of: Chain) -> None:
    records = chain_of(10)
    forged = records[2].event.replace(b'"inappropriate"', b'"security"')
    records[2] = dataclasses.replace(records[2], event=forged)
    result = verify_chain(records)
    assert result.problem is not None and (result.problem.kind, result.problem.seq) == (ProblemKind.CHANGED, 3)


def test_a_record_rewritten_and_rehashed_is_located_by_the_next_link(chain_of: Chain) -> None:
    records = chain_of(10)
    r = records[4]
    forged = next_record(
        ChainHead(r.school_id, 4, r.prev_hash),
        event_id=r.event_id,
        topic=r.topic,
        event=r.event,
        recorded_at=r.recorded_at + timedelta(hours=3),
    )
    records[4] = forged
    result = verify_chain(records)
    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq, result.intact_up_to) == (ProblemKind.CHANGED, 5, 4)


def test_a_deleted_record_is_located(chain_of: Chain) -> None:
    records = chain_of(10)
    del records[3]
    result = verify_chain(records)
    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq, result.intact_up_to) == (ProblemKind.MISSING, 4, 3)
    assert "4" in str(result)


def test_deleted_last_records_are_not_visible_to_the_chain_alone(chain_of: Chain) -> None:
    # Why checkpoints exist: a truncated tail is a shorter, intact chain.
    assert verify_chain(chain_of(10)[:8]).intact_up_to == 8


def test_swapped_records_are_located(chain_of: Chain) -> None:
    records = chain_of(10)
    records[5], records[6] = records[6], records[5]
    result = verify_chain(records)
    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq, result.intact_up_to) == (ProblemKind.REORDERED, 7, 5)


def test_a_record_renumbered_into_another_place_is_reported_as_reordered(chain_of: Chain) -> None:
    records = chain_of(10)
    moved = records.pop(2)
    records.insert(7, moved)
    result = verify_chain(records)
    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq, result.intact_up_to) == (ProblemKind.REORDERED, 4, 2)


def test_a_record_of_another_school_is_refused(chain_of: Chain) -> None:
    records = chain_of(3)
    other = chain_of(3, school="school-urn-100002")
    result = verify_chain([records[0], other[1], records[2]])
    assert result.problem is not None and result.problem.seq == 2


def test_a_naive_recorded_at_is_refused(chain_of: Chain) -> None:
    r = chain_of(1)[0]
    with pytest.raises(ValueError, match="timezone"):
        dataclasses.replace(r, recorded_at=r.recorded_at.replace(tzinfo=None))


def test_a_long_chain_verifies_and_a_change_near_its_end_is_located(chain_of: Chain) -> None:
    # Behaviour only; verification speed beside bare SHA-256 is measured by `make bench` (bench/audit.py).
    n = 20_000
    base = chain_of(50)
    records, head = [], ChainHead.genesis(base[0].school_id)
    for i in range(n):
        src = base[i % 50]
        r = next_record(head, event_id=f"e{i}", topic=src.topic, event=src.event, recorded_at=src.recorded_at)
        records.append(r)
        head = r.head
    assert verify_chain(records).intact_up_to == n
    records[n - 2] = dataclasses.replace(records[n - 2], event_id="forged")
    result = verify_chain(records)
    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq, result.intact_up_to) == (ProblemKind.CHANGED, n - 1, n - 2)
