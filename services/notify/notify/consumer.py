"""notifications.requested -> one `deliveries` row. No network I/O here: the send happens in `delivery`,
after this transaction has committed, so a slow provider never holds a consumer transaction open."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from common.consumer import BatchedHandler, Handler
from common.contracts import IncidentAcknowledged, NotificationRequested
from common.db import Connection, unnest_columns
from common.events import Clock, CloudEvent, describe_problems, utc_now
from common.roles import normalise_role

# A poll's requests in one statement; a notification already known (or twice in the batch) keeps its first request.
_INSERT = (
    "INSERT INTO deliveries (notification_id, incident_id, school_id, event_id, correlation_id, request,"
    " next_attempt_at, received_at, requested_at)"
    " SELECT r.notification_id, r.incident_id, r.school_id, r.event_id, r.correlation_id, r.request::jsonb, $8, $8,"
    " r.requested_at FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],"
    " $7::timestamptz[]) AS r(notification_id, incident_id, school_id, event_id, correlation_id, request, requested_at)"
    " ON CONFLICT (notification_id) DO NOTHING"
)
# The same, and the NOTIFY that wakes the delivery loop at commit, in one round trip instead of two.
_INSERT_AND_WAKE = f"WITH inserted AS ({_INSERT}) SELECT pg_notify($9, '')"
# The earliest acknowledgement counts: a notice requested before it is withheld.
_ACKNOWLEDGED = (
    "INSERT INTO acknowledgements (incident_id, acknowledged_at, by_role) VALUES ($1, $2, $3)"
    " ON CONFLICT (incident_id) DO UPDATE SET acknowledged_at = EXCLUDED.acknowledged_at, by_role = EXCLUDED.by_role"
    " WHERE EXCLUDED.acknowledged_at < acknowledgements.acknowledged_at"
)


class InvalidRequest(ValueError):
    """The request does not fit the contract; the runner dead-letters it. The message names the fields and
    the problems, never the values: a request that smuggled a pupil's name must not put it in a log."""


def parse_request(data: dict[str, object]) -> NotificationRequested:
    try:
        return NotificationRequested.model_validate(data)
    except ValidationError as exc:
        problems = describe_problems(exc, root="(data)", limit=10)
        raise InvalidRequest(f"not a valid notification request: {problems}") from None


def requested_handler(clock: Clock = utc_now, wake_channel: str | None = None) -> BatchedHandler:
    """The handler for notifications.requested, a poll's batch at a time. A request redelivered, or re-sent under
    a new event id with the same notification id, inserts nothing: the notification is sent at most once."""

    async def handle(events: Sequence[CloudEvent], conn: Connection) -> None:
        first: dict[str, tuple[object, ...]] = {}
        for event in events:
            request = parse_request(event.data)  # every one, so that a malformed request fails the batch
            if request.notification_id not in first:
                first[request.notification_id] = (
                    request.notification_id, request.incident_id, request.school_id, event.id, event.correlationid,
                    request.model_dump_json(), event.time,
                )
        args = [*unnest_columns(first.values()), clock()]
        if wake_channel is None:
            await conn.execute(_INSERT, *args)
        else:  # the NOTIFY is delivered at commit: the delivery loop starts at once
            await conn.execute(_INSERT_AND_WAKE, *args, wake_channel)

    return BatchedHandler(handle)


def acknowledged_handler() -> Handler:
    """The handler for incidents.acknowledged: remembers when the incident was first acknowledged and by whom
    (the role as triage compares it), so the delivery loop withholds the notices it makes moot
    (`_Item.overtaken_by_acknowledgement`)."""

    async def handle(event: CloudEvent, conn: Connection) -> None:
        ack = IncidentAcknowledged.model_validate(event.data)
        await conn.execute(_ACKNOWLEDGED, ack.incident_id, ack.at, normalise_role(ack.by.role))

    return handle
