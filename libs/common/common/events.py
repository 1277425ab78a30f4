"""The CloudEvents 1.0 envelope (structured JSON) with the product's extensions, and how to build one."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.topics import TOPIC_OF, EventType, Topic

Clock = Callable[[], datetime]
IdFactory = Callable[[], str]


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class CloudEvent(BaseModel):
    """A fact that happened, as it travels between services. Frozen: never changed after it is built."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: EventType
    subject: str = Field(min_length=1, description="The incident id; also the partition key.")
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any]
    schoolid: str = Field(min_length=1, description="Tenant: the school the event belongs to.")
    correlationid: str = Field(min_length=1, description="Shared by every event caused by one report.")
    causationid: str | None = Field(default=None, description="The id of the event that caused this one.")

    @property
    def topic(self) -> Topic:
        return TOPIC_OF[self.type]

    @property
    def key(self) -> bytes:
        return self.subject.encode()

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> CloudEvent:
        return cls.model_validate_json(raw)


class MalformedEvent(ValueError):
    """A message that is not a valid CloudEvent of ours; it goes to the dead-letter topic."""


def parse_event(raw: bytes | None) -> CloudEvent:
    if raw is None:
        raise MalformedEvent("message has no value")
    try:
        return CloudEvent.from_bytes(raw)
    except ValidationError as exc:
        raise MalformedEvent(f"not a valid CloudEvent: {describe_problems(exc, root='(body)')}") from exc


def describe_problems(exc: ValidationError, *, root: str, limit: int = 5) -> str:
    """Where and what is wrong, never the input values (which may carry a pupil's name)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or root}: {err['msg']}" for err in exc.errors()[:limit]
    )


def new_event(
    type: EventType,
    *,
    source: str,
    subject: str,
    schoolid: str,
    data: Mapping[str, Any],
    caused_by: CloudEvent | None = None,
    correlationid: str | None = None,
    clock: Clock = utc_now,
    ids: IdFactory = new_id,
    event_id: str | None = None,
) -> CloudEvent:
    """Build an event; when `caused_by` is given its correlation id carries over and it becomes the cause."""
    eid = event_id or ids()
    if caused_by is not None:
        correlation = correlationid or caused_by.correlationid
        causation: str | None = caused_by.id
    else:
        correlation = correlationid or eid
        causation = None
    return CloudEvent(
        id=eid,
        source=source,
        type=type,
        subject=subject,
        time=clock(),
        data=dict(data),
        schoolid=schoolid,
        correlationid=correlation,
        causationid=causation,
    )
