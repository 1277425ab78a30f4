"""Builders shared by the audit tests: a school's chain of real CloudEvents with an injected clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from audit.chain import AuditRecord, ChainHead, record_event
from common.events import new_event
from common.topics import EventType

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


def build_chain(n: int, school: str = "school-urn-100001") -> list[AuditRecord]:
    head = ChainHead.genesis(school)
    records: list[AuditRecord] = []
    for i in range(n):
        event = new_event(
            EventType.INCIDENT_REPORTED,
            source="intake",
            subject=f"inc-{i // 3}",
            schoolid=school,
            data={"class": "inappropriate", "where": "ICT suite — PC 12", "n": i},
            clock=lambda i=i: T0 + timedelta(minutes=i),
            event_id=f"evt-{i:06d}",
        )
        record = record_event(head, event, recorded_at=T0 + timedelta(minutes=i, seconds=1))
        records.append(record)
        head = record.head
    return records


@pytest.fixture
def chain_of() -> Callable[..., list[AuditRecord]]:
    return build_chain
