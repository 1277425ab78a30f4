"""The notify service on the real database and broker, with real local SMTP and HTTP servers."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from standardwebhooks import Webhook
from support.helpers import eventually, produce, read_topic

from common.contracts import (
    ChannelAddress,
    ChannelKind,
    IncidentClass,
    NoticePurpose,
    NotificationRequested,
    Recipient,
    Urgency,
)
from common.events import CloudEvent, new_event, utc_now
from common.tokens import verify_ack_token
from common.topics import EventType
from notify.channels.base import DeliveryReceipt, OutgoingMessage, message_id_for
from notify.config import NotifySettings
from notify.consumer import acknowledged_handler, requested_handler
from notify.delivery import Deliverer, DeliveryConfig, _Batch, _Item
from notify.main import NotifyService, build

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"oakfield-webhook-signing-key-32b").decode()
NOTIFY_API_KEY = "oakfield_live-26785a09-ab16-4eb0-8407-a37497a57506-3d844edf-8d35-48ac-975b-e847b4f122b0"
SMS_TEMPLATE = "ceb50d92-100d-4b8b-b559-14fa3b091cda"
TOKEN_SECRET = "test-token-secret-0123456789abcdef-0123456789"
PUBLIC = "https://safety.oakfield.example"
PUPIL_NAME = "Jamie Fictional-Pupil"
PUPIL_DOB = "14/02/2014"


def notify_settings(stack: Any, isolation: str, smtp_port: int, **overrides: Any) -> NotifySettings:
    values: dict[str, Any] = {
        "database_url": stack.admin_dsn,
        "db_schema": f"{isolation}_notify",
        "kafka_bootstrap_servers": stack.bootstrap,
        "topic_prefix": f"{isolation}.",
        "outbox_poll_seconds": 0.1,
        "delivery_poll_seconds": 0.05,
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp_port,
        "smtp_timeout_seconds": 5,
        "mail_from": "alerts@oakfield.example",
        "token_secret": TOKEN_SECRET,
        "public_base_url": PUBLIC,
        "retry_base_seconds": 0.05,
        "retry_cap_seconds": 0.2,
        "retry_max_attempts": 4,
    }
    values.update(overrides)
    return NotifySettings(**values)


def requested(request: NotificationRequested) -> CloudEvent:
    return new_event(
        EventType.NOTIFICATION_REQUESTED, source="tests", subject=request.incident_id,
        schoolid=request.school_id, data=request.model_dump(mode="json"),
    )


def fresh(make_request: Callable[..., NotificationRequested], **overrides: Any) -> NotificationRequested:
    overrides.setdefault("notification_id", str(uuid.uuid4()))
    return make_request(**overrides)


def recipient(*channels: tuple[ChannelKind, str], role: str = "dsl") -> Recipient:
    return Recipient(role=role, name="Ms Patel", channels=[ChannelAddress(kind=k, address=a) for k, a in channels])


async def start(settings: NotifySettings, *, consume: bool = True) -> NotifyService:
    service = build(settings, consume=consume)
    await service.runtime.start()
    return service


async def handle_directly(service: NotifyService, *requests: NotificationRequested) -> None:
    """Hand requests to the consumer's handler in a transaction, as the runner does, without a group join
    (~5 s each on this broker); for the tests about what happens after the row exists."""
    handler = requested_handler()
    async with service.runtime.pool.acquire() as conn, conn.transaction():
        await handler.handle_batch([requested(request) for request in requests], conn)


async def send_requests(stack: Any, isolation: str, *events: CloudEvent) -> None:
    await produce(stack.bootstrap, f"{isolation}.notifications.requested", [e.to_bytes() for e in events])


async def outcome_events(stack: Any, isolation: str, topic: str, expect: int, timeout: float = 15) -> list[CloudEvent]:
    records = await read_topic(stack.bootstrap, f"{isolation}.{topic}", expect=expect, timeout=timeout)
    return [CloudEvent.from_bytes(value) for value, _ in records]


async def delivery_rows(stack: Any, isolation: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(stack.admin_dsn)
    try:
        return list(await conn.fetch(f"SELECT * FROM {isolation}_notify.deliveries ORDER BY received_at"))  # noqa: S608
    finally:
        await conn.close()


async def test_requested_notification_is_emailed_and_reported_delivered(stack, isolation, smtp_server, make_request):
    # A poll far longer than the test: the request's NOTIFY at commit must wake the delivery loop.
    service = await start(notify_settings(stack, isolation, smtp_server.port, delivery_poll_seconds=60))
    try:
        request = fresh(make_request)
        await send_requests(stack, isolation, requested(request))
        delivered = await outcome_events(stack, isolation, "notifications.delivered", expect=1, timeout=25)
    finally:
        await service.runtime.stop()
    assert len(smtp_server.mailbox.messages) == 1
    email = smtp_server.mailbox.messages[0]
    assert email["Message-ID"] == f"<{request.notification_id}@oakfield.example>"
    assert email["To"] == "dsl@oakfield.example"
    assert "OSI-7K2QF" in email["Subject"] and "Oakfield Primary School" in email["Subject"]
    body = email.get_content()
    link = next(line for line in body.splitlines() if line.startswith(f"{PUBLIC}/ack/"))
    claims = verify_ack_token(link.rsplit("/", 1)[1], TOKEN_SECRET)
    assert (claims.notification_id, claims.incident_id, claims.recipient_role) == (
        request.notification_id, request.incident_id, "dsl"
    )
    [event] = delivered
    assert event.type is EventType.NOTIFICATION_DELIVERED and event.subject == request.incident_id
    assert event.data["notification_id"] == request.notification_id
    assert event.data["channel"] == "email"
    assert event.data["provider_id"] == email["Message-ID"]
    assert event.data["attempts"] == 1


async def test_redelivered_request_is_sent_once(stack, isolation, smtp_server, make_request):
    service = await start(notify_settings(stack, isolation, smtp_server.port))
    try:
        request, marker = fresh(make_request), fresh(make_request, reference="OSI-MARK1")
        first = requested(request)
        again_new_id = requested(request)  # the same notification under another event id (triage re-sent it)
        await send_requests(stack, isolation, first, first, again_new_id)
        await eventually(lambda: _mail_count_at_least(smtp_server, 1), timeout=20, what="the first email")
        await send_requests(stack, isolation, first, requested(marker))
        await eventually(lambda: _mail_count_at_least(smtp_server, 2), timeout=20, what="the marker email")
        delivered = await outcome_events(stack, isolation, "notifications.delivered", expect=3, timeout=1.5)
    finally:
        await service.runtime.stop()
    ids = [m["Message-ID"] for m in smtp_server.mailbox.messages]
    assert sorted(ids) == sorted([f"<{request.notification_id}@oakfield.example>",
                                  f"<{marker.notification_id}@oakfield.example>"])
    assert sorted(e.data["notification_id"] for e in delivered) == sorted(
        [request.notification_id, marker.notification_id]
    )


async def test_a_batch_of_requests_keeps_each_notifications_first_request(stack, isolation, smtp_server, make_request):
    service = await start(notify_settings(stack, isolation, smtp_server.port, delivery_loop=False), consume=False)
    try:
        one, other = fresh(make_request), fresh(make_request)
        first, for_other = requested(one), requested(other)
        again = requested(one.model_copy(update={"reference": "OSI-AGAIN"}))  # re-sent under a new event id
        async with service.runtime.pool.acquire() as conn:
            async with conn.transaction():
                await requested_handler().handle_batch([first, again, for_other, first], conn)
            rows = await conn.fetch("SELECT notification_id, event_id, request->>'reference' AS reference"
                                    " FROM deliveries")
    finally:
        await service.runtime.stop()
    assert {r["notification_id"]: (r["event_id"], r["reference"]) for r in rows} == {
        one.notification_id: (first.id, one.reference), other.notification_id: (for_other.id, other.reference),
    }


async def _mail_count_at_least(server: Any, n: int) -> bool:
    return len(server.mailbox.messages) >= n


async def test_retryable_smtp_failure_is_retried_then_delivered(stack, isolation, smtp_server, make_request):
    smtp_server.mailbox.data_replies.extend(["451 4.3.0 try again later", "421 4.7.0 busy"])
    service = await start(notify_settings(stack, isolation, smtp_server.port))
    try:
        request = fresh(make_request)
        await send_requests(stack, isolation, requested(request))
        [event] = await outcome_events(stack, isolation, "notifications.delivered", expect=1, timeout=25)
    finally:
        await service.runtime.stop()
    assert event.data["channel"] == "email" and event.data["attempts"] == 3
    assert len(smtp_server.mailbox.messages) == 1
    [row] = await delivery_rows(stack, isolation)
    assert row["state"] == "sent" and row["total_attempts"] == 3


async def test_permanent_failure_falls_back_to_the_next_channel(
    stack, isolation, smtp_server, http_server, make_request
):
    smtp_server.mailbox.refuse_recipients_with = "550 5.1.1 no such user"
    http_server.default.status = 204
    http_server.default.body = None
    service = await start(notify_settings(stack, isolation, smtp_server.port, webhook_secret=WEBHOOK_SECRET))
    try:
        request = fresh(make_request, recipient=recipient(
            (ChannelKind.EMAIL, "gone@oakfield.example"), (ChannelKind.WEBHOOK, f"{http_server.url}/cpoms")
        ))
        await send_requests(stack, isolation, requested(request))
        [event] = await outcome_events(stack, isolation, "notifications.delivered", expect=1, timeout=25)
    finally:
        await service.runtime.stop()
    assert smtp_server.mailbox.messages == []
    [hook] = http_server.requests
    assert hook.path == "/cpoms"
    assert hook.headers["webhook-id"] == request.notification_id
    payload = Webhook(WEBHOOK_SECRET).verify(hook.body, hook.headers)
    assert payload["notifications"][0]["notification_id"] == request.notification_id
    assert event.data["channel"] == "webhook" and event.data["provider_id"] == request.notification_id
    assert event.data["attempts"] == 2
    [row] = await delivery_rows(stack, isolation)
    assert row["channel_index"] == 1 and "550" in row["errors"]


async def test_every_channel_failing_publishes_notification_failed(
    stack, isolation, smtp_server, http_server, make_request
):
    smtp_server.mailbox.refuse_recipients_with = "550 5.1.1 no such user"
    http_server.default.status = 503  # retryable, until the retries run out
    service = await start(notify_settings(stack, isolation, smtp_server.port, webhook_secret=WEBHOOK_SECRET,
                                          retry_max_attempts=3))
    try:
        request = fresh(make_request, level=2, generation=5, recipient=recipient(
            (ChannelKind.EMAIL, "gone@oakfield.example"), (ChannelKind.WEBHOOK, f"{http_server.url}/down")
        ))
        await send_requests(stack, isolation, requested(request))
        [event] = await outcome_events(stack, isolation, "notifications.failed", expect=1, timeout=25)
        assert await outcome_events(stack, isolation, "notifications.delivered", expect=1, timeout=1) == []
    finally:
        await service.runtime.stop()
    assert event.type is EventType.NOTIFICATION_FAILED
    assert event.data["notification_id"] == request.notification_id
    assert (event.data["level"], event.data["generation"], event.data["recipient_role"]) == (2, 5, "dsl")
    assert len(event.data["errors"]) == 4  # one email refusal, three webhook attempts
    assert event.data["errors"][0].startswith("email: recipient refused: 550")
    assert "gave up after 3 attempts" in event.data["errors"][-1]
    assert len(http_server.requests) == 3
    assert {r.headers["webhook-id"] for r in http_server.requests} == {request.notification_id}


async def test_a_digest_retried_or_fallen_back_goes_out_as_one_message_again_with_the_same_id(
    stack, isolation, smtp_server, http_server, make_request
):
    """Three routine notices to one inbox go as one digest. The server says 'try later': they used to come back one
    message each under new ids (a retry's backoff was drawn per notice, and retries skipped the throttle), and
    after a fallback likewise. They go together again, as the same message, by whatever channel each has now."""
    settings = notify_settings(stack, isolation, smtp_server.port, delivery_loop=False, throttle_window_seconds=120,
                               retry_base_seconds=30, retry_cap_seconds=30, webhook_secret=WEBHOOK_SECRET)
    routine: dict[str, Any] = {"incident_class": IncidentClass.INAPPROPRIATE, "urgency": Urgency.NORMAL}
    inbox = recipient((ChannelKind.EMAIL, "dsl@oakfield.example"), (ChannelKind.WEBHOOK, http_server.url))
    service = await start(settings, consume=False)
    smtp_server.mailbox.data_replies.append("451 4.3.0 try again later")
    try:
        notices = [fresh(make_request, reference=f"OSI-RTRY{n}", recipient=inbox, **routine) for n in range(3)]
        await handle_directly(service, *notices)
        t0 = utc_now()
        assert (await service.deliverer.deliver_due(t0)).retried == 3
        rows = await delivery_rows(stack, isolation)
        assert len({r["next_attempt_at"] for r in rows}) == 1  # one backoff for the message, not one each
        retried = await service.deliverer.deliver_due(t0 + timedelta(seconds=31))
        assert retried.sent == 3
        # The same three again, now falling back: the email server refuses them for good.
        again = [fresh(make_request, reference=f"OSI-FALL{n}", recipient=inbox, **routine) for n in range(3)]
        await handle_directly(service, *again)
        smtp_server.mailbox.data_replies.append("554 5.7.1 rejected")
        http_server.then(200, {"ok": True})
        fell_back = await service.deliverer.deliver_due(t0 + timedelta(minutes=5))
        assert (fell_back.fell_back, fell_back.sent) == (3, 3)  # at once, by the next channel
    finally:
        await service.runtime.stop()
    ids = sorted(n.notification_id for n in notices)
    [digest] = smtp_server.mailbox.messages  # the 451 and the 554 were not accepted
    assert digest["Message-ID"] == f"<{message_id_for(ids)}@oakfield.example>"
    assert all(f"OSI-RTRY{n}" in digest.get_content() for n in range(3))
    [webhook] = http_server.requests
    assert webhook.headers["webhook-id"] == message_id_for([n.notification_id for n in again])


async def test_restart_in_the_middle_of_a_backoff_resumes_it(stack, isolation, smtp_server, make_request):
    settings = notify_settings(stack, isolation, smtp_server.port, delivery_loop=False,
                               retry_base_seconds=60, retry_cap_seconds=60)
    smtp_server.mailbox.data_replies.append("451 4.3.0 try again later")
    request = fresh(make_request)
    first = await start(settings, consume=False)
    try:
        await handle_directly(first, request)
        t0 = utc_now()
        result = await first.deliverer.deliver_due(t0)
        assert result.retried == 1 and smtp_server.mailbox.messages == []
    finally:
        await first.runtime.stop()  # notify goes away during the backoff

    [row] = await delivery_rows(stack, isolation)
    assert (row["state"], row["attempts"]) == ("pending", 1)
    assert t0 < row["next_attempt_at"] <= t0 + timedelta(seconds=60)

    # The new instance resumes from the deliveries table alone. (Neither consumes: a consumer stopped while it
    # is still joining the group, the old member's session not yet expired, takes ~18 s to stop.)
    second = await start(settings, consume=False)
    try:
        early = await second.deliverer.deliver_due(row["next_attempt_at"] - timedelta(milliseconds=1))
        assert early.claimed == 0 and smtp_server.mailbox.messages == []
        resumed = await second.deliverer.deliver_due(t0 + timedelta(minutes=2))
        assert resumed.sent == 1
        [event] = await outcome_events(stack, isolation, "notifications.delivered", expect=1, timeout=20)
    finally:
        await second.runtime.stop()
    assert len(smtp_server.mailbox.messages) == 1
    assert event.data["notification_id"] == request.notification_id and event.data["attempts"] == 2


async def test_no_child_name_in_any_subject_or_sms(stack, isolation, smtp_server, http_server, make_request):
    settings = notify_settings(stack, isolation, smtp_server.port, notify_api_key=NOTIFY_API_KEY,
                               notify_base_url=http_server.url, notify_sms_template_id=SMS_TEMPLATE)
    service = await start(settings)
    try:
        by_sms = fresh(make_request, recipient=recipient((ChannelKind.SMS, "07700 900123"), role="headteacher"))
        by_email = fresh(make_request, incident_class=IncidentClass.YOUTH_PRODUCED_SEXUAL_IMAGERY,
                         urgency=Urgency.HIGH)
        smuggled = requested(fresh(make_request)).model_copy(
            update={"data": {**by_email.model_dump(mode="json"), "notification_id": str(uuid.uuid4()),
                             "pupil_name": PUPIL_NAME, "pupil_dob": PUPIL_DOB}}
        )
        await send_requests(stack, isolation, smuggled, requested(by_sms), requested(by_email))
        delivered = await outcome_events(stack, isolation, "notifications.delivered", expect=2, timeout=25)
        dead = await read_topic(stack.bootstrap, f"{isolation}.notifications.requested.dlq", expect=1, timeout=10)
    finally:
        await service.runtime.stop()
    assert sorted(e.data["channel"] for e in delivered) == ["email", "sms"]
    assert len(dead) == 1 and b"pupil_name" in dead[0][1]["dlq.error"]  # a request carrying a name is refused
    assert PUPIL_NAME.encode() not in dead[0][1]["dlq.error"]  # and the refusal does not repeat it
    [sms] = [r.json() for r in http_server.requests]
    assert sms["phone_number"] == "07700 900123" and sms["template_id"] == SMS_TEMPLATE
    assert sms["reference"] == by_sms.notification_id
    [email] = smtp_server.mailbox.messages
    for text in (sms["personalisation"]["body"], email["Subject"], email.get_content()):
        assert PUPIL_NAME.split()[0] not in text and PUPIL_DOB not in text and "2014" not in text
    assert "OSI-7K2QF" in sms["personalisation"]["body"]
    assert "youth-produced sexual imagery" in email["Subject"]


async def test_routine_requests_to_one_address_are_grouped_and_illegal_ones_are_not(
    stack, isolation, smtp_server, make_request
):
    settings = notify_settings(stack, isolation, smtp_server.port, delivery_loop=False, throttle_window_seconds=120)
    routine = {"incident_class": IncidentClass.INAPPROPRIATE, "urgency": Urgency.NORMAL}
    service = await start(settings, consume=False)
    try:
        a, b = fresh(make_request, reference="OSI-AAAA1", **routine), fresh(make_request, reference="OSI-BBBB2",
                                                                             **routine)
        await handle_directly(service, a, b)
        t0 = utc_now()
        assert (await service.deliverer.deliver_due(t0)).sent == 2  # a quiet address: at once, as one digest
        assert len(smtp_server.mailbox.messages) == 1
        digest = smtp_server.mailbox.messages[0]
        assert "2 online-safety incidents" in digest["Subject"]
        assert "OSI-AAAA1" in digest.get_content() and "OSI-BBBB2" in digest.get_content()

        c = fresh(make_request, reference="OSI-CCCC3", **routine)
        illegal = fresh(make_request, reference="OSI-DDDD4")
        await handle_directly(service, c, illegal)
        second = await service.deliverer.deliver_due(t0 + timedelta(seconds=10))
        assert (second.sent, second.held) == (1, 1)  # the illegal one goes, the routine one waits
        assert "OSI-DDDD4" in smtp_server.mailbox.messages[-1]["Subject"]
        assert (await service.deliverer.deliver_due(t0 + timedelta(seconds=60))).claimed == 0
        released = await service.deliverer.deliver_due(t0 + timedelta(seconds=121))
        assert released.sent == 1
        assert "OSI-CCCC3" in smtp_server.mailbox.messages[-1]["Subject"]
        delivered = await outcome_events(stack, isolation, "notifications.delivered", expect=4, timeout=15)
    finally:
        await service.runtime.stop()
    assert len(smtp_server.mailbox.messages) == 3
    assert sorted(e.data["notification_id"] for e in delivered) == sorted(
        r.notification_id for r in (a, b, c, illegal)
    )


@pytest.fixture(autouse=True)
def _no_leaked_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SMTP_HOST", "NOTIFY_API_KEY", "WEBHOOK_SECRET", "DELIVERY_LOOP"):
        monkeypatch.delenv(name, raising=False)


async def test_send_never_recorded_is_sent_again_with_the_same_id_and_reported_once(
    stack, isolation, smtp_server, make_request
):
    """The process died after the provider accepted but before the commit: once the lease expires the
    message goes again with the same Message-ID (the receiver drops it), and one delivered event leaves."""
    settings = notify_settings(stack, isolation, smtp_server.port, delivery_loop=False, send_lease_seconds=30)
    service = await start(settings, consume=False)  # the request goes straight to the handler: no group join
    try:
        request = fresh(make_request)
        await handle_directly(service, request)
        t0 = utc_now()
        assert (await service.deliverer.deliver_due(t0)).sent == 1
        conn = await asyncpg.connect(stack.admin_dsn)
        try:  # as if the outcome had never been recorded: in flight, lease running
            await conn.execute(
                f"UPDATE {isolation}_notify.deliveries SET state = 'sending', next_attempt_at = $1",  # noqa: S608
                t0 + timedelta(seconds=30),
            )
        finally:
            await conn.close()
        assert (await service.deliverer.deliver_due(t0 + timedelta(seconds=10))).claimed == 0  # lease running
        assert (await service.deliverer.deliver_due(t0 + timedelta(seconds=31))).sent == 1
        delivered = await outcome_events(stack, isolation, "notifications.delivered", expect=2, timeout=1.5)
    finally:
        await service.runtime.stop()
    ids = [m["Message-ID"] for m in smtp_server.mailbox.messages]
    assert ids == [f"<{request.notification_id}@oakfield.example>"] * 2
    assert [e.data["notification_id"] for e in delivered] == [request.notification_id]


async def test_an_outcome_the_database_lost_mid_send_is_recorded_when_it_returns_and_not_sent_again(
    stack, isolation, smtp_server, make_request
):
    """The database connection dies while the SMTP server accepts the message (as when PostgreSQL is killed):
    notify keeps trying to record the outcome while its lease runs, instead of sending the message again."""
    settings = notify_settings(stack, isolation, smtp_server.port, delivery_loop=False, send_lease_seconds=30)
    service = await start(settings, consume=False)
    cut = []

    async def cut_notify_off() -> None:
        conn = await asyncpg.connect(stack.admin_dsn)
        try:
            cut.extend(await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", f"{isolation}_notify_app"
            ))
        finally:
            await conn.close()

    try:
        request = fresh(make_request)
        await handle_directly(service, request)
        smtp_server.mailbox.on_accept = cut_notify_off
        t0 = utc_now()
        result = await service.deliverer.deliver_due(t0)
        smtp_server.mailbox.on_accept = None
        assert cut  # the connections really were cut while the message was being accepted
        assert result.sent == 1
        assert (await service.deliverer.deliver_due(t0 + timedelta(seconds=31))).claimed == 0  # nothing to resend
        # The outcome is published once the database is back (generous under load), then nothing more comes.
        await outcome_events(stack, isolation, "notifications.delivered", expect=1, timeout=30)
        delivered = await outcome_events(stack, isolation, "notifications.delivered", expect=2, timeout=3)
    finally:
        await service.runtime.stop()
    assert [m["Message-ID"] for m in smtp_server.mailbox.messages] == [f"<{request.notification_id}@oakfield.example>"]
    assert [e.data["notification_id"] for e in delivered] == [request.notification_id]
    [row] = await delivery_rows(stack, isolation)
    assert row["state"] == "sent"


# ---------------------------------------------------------------- acknowledged before it went out


def acknowledged(incident_id: str, at: object) -> CloudEvent:
    return new_event(EventType.INCIDENT_ACKNOWLEDGED, source="tests", subject=incident_id, schoolid="school-a",
                     data={"incident_id": incident_id, "by": {"role": "dsl"}, "at": str(at), "via": "link"})


async def test_notice_of_an_incident_acknowledged_before_it_went_out_is_withheld_and_reported(
    stack, isolation, smtp_server, make_request
):
    settings = notify_settings(stack, isolation, smtp_server.port, delivery_loop=False)
    service = await start(settings, consume=False)
    routine = fresh(make_request, incident_id=str(uuid.uuid4()), incident_class=IncidentClass.INAPPROPRIATE,
                    urgency=Urgency.NORMAL, recipient=recipient((ChannelKind.EMAIL, "online.safety@oakfield.example"),
                                                                role="online_safety_coordinator"))
    illegal = fresh(make_request, incident_id=str(uuid.uuid4()),
                    recipient=recipient((ChannelKind.EMAIL, "head@oakfield.example"), role="headteacher"))
    later = fresh(make_request, incident_id=str(uuid.uuid4()), incident_class=IncidentClass.INAPPROPRIATE,
                  urgency=Urgency.NORMAL, recipient=recipient((ChannelKind.EMAIL, "it@oakfield.example"),
                                                              role="it_technician"))
    try:
        t0 = utc_now()
        async with service.runtime.pool.acquire() as conn, conn.transaction():
            for request in (routine, illegal, later):
                await requested_handler()(requested(request), conn)
            on_ack = acknowledged_handler()
            # The first two are acknowledged after they were requested; the third was requested after its
            # acknowledgement (an overdue action's re-notice), so it still goes.
            await on_ack(acknowledged(routine.incident_id, t0 + timedelta(seconds=1)), conn)
            await on_ack(acknowledged(routine.incident_id, t0 + timedelta(seconds=30)), conn)  # the first counts
            await on_ack(acknowledged(illegal.incident_id, t0 + timedelta(seconds=1)), conn)
            await on_ack(acknowledged(later.incident_id, t0 - timedelta(minutes=5)), conn)
        result = await service.deliverer.deliver_due(t0 + timedelta(seconds=2))
        assert (result.withheld, result.sent, result.failed) == (1, 2, 0)
        [withheld] = await outcome_events(stack, isolation, "notifications.withheld", expect=1, timeout=20)
        failed = await outcome_events(stack, isolation, "notifications.failed", expect=1, timeout=1)
        # Withheld is final: a later pass claims nothing.
        again = await service.deliverer.deliver_due(t0 + timedelta(minutes=10))
    finally:
        await service.runtime.stop()

    sent_ids = {m["Message-ID"] for m in smtp_server.mailbox.messages}
    assert sent_ids == {f"<{illegal.notification_id}@oakfield.example>", f"<{later.notification_id}@oakfield.example>"}
    assert withheld.type is EventType.NOTIFICATION_WITHHELD and withheld.subject == routine.incident_id
    assert withheld.data["notification_id"] == routine.notification_id
    assert withheld.data["recipient_role"] == "online_safety_coordinator"
    assert withheld.data["acknowledged_at"].startswith((t0 + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S"))
    assert "acknowledged" in withheld.data["reason"]
    assert failed == []
    states = {r["notification_id"]: r["state"] for r in await delivery_rows(stack, isolation)}
    assert states == {routine.notification_id: "withheld", illegal.notification_id: "sent",
                      later.notification_id: "sent"}
    assert again.claimed == 0


async def test_a_chain_notice_requested_after_an_acknowledgement_is_withheld_and_a_reminder_is_not(
    stack, isolation, smtp_server, make_request
):
    """Triage requests the next level when a timeout passes without an acknowledgement it has read; one made just
    before may still be on its way. notify withholds such an escalation if someone the chain told acknowledged,
    whenever it was requested, but not an overdue reminder's re-notice, nor on the word of someone it never told."""
    settings = notify_settings(stack, isolation, smtp_server.port, delivery_loop=False)
    service = await start(settings, consume=False)
    routine: dict[str, Any] = {"incident_class": IncidentClass.INAPPROPRIATE, "urgency": Urgency.NORMAL}
    told, unknown, reminded = (str(uuid.uuid4()) for _ in range(3))
    first = fresh(make_request, incident_id=told, **routine, purpose=NoticePurpose.ESCALATION,
                  recipient=recipient((ChannelKind.EMAIL, "dsl@oakfield.example"), role="dsl"))
    escalation = fresh(make_request, incident_id=told, level=2, **routine, purpose=NoticePurpose.ESCALATION,
                       recipient=recipient((ChannelKind.EMAIL, "deputy@oakfield.example"), role="deputy_dsl"))
    on_a_strangers_word = fresh(
        make_request, incident_id=unknown, level=2, **routine, purpose=NoticePurpose.ESCALATION,
        recipient=recipient((ChannelKind.EMAIL, "deputy@oakfield.example"), role="deputy_dsl"))
    reminder = fresh(make_request, incident_id=reminded, **routine, purpose=NoticePurpose.REMINDER,
                     recipient=recipient((ChannelKind.EMAIL, "head@oakfield.example"), role="headteacher"))
    try:
        async with service.runtime.pool.acquire() as conn, conn.transaction():
            await requested_handler()(requested(first), conn)
        assert (await service.deliverer.deliver_due(utc_now())).sent == 1
        t0 = utc_now()
        async with service.runtime.pool.acquire() as conn, conn.transaction():
            on_ack = acknowledged_handler()
            # Acknowledged a minute before triage, not having read it, requested the next level.
            await on_ack(acknowledged(told, t0 - timedelta(minutes=1)), conn)
            await on_ack(new_event(EventType.INCIDENT_ACKNOWLEDGED, source="tests", subject=unknown,
                                   schoolid="school-a", data={"incident_id": unknown, "by": {"role": "Governor"},
                                                              "at": str(t0 - timedelta(minutes=1)), "via": "api"}),
                         conn)
            for request in (escalation, on_a_strangers_word, reminder):
                await requested_handler()(requested(request), conn)
            # The reminder was requested before its incident's acknowledgement: it still goes.
            await on_ack(acknowledged(reminded, utc_now() + timedelta(seconds=1)), conn)
        result = await service.deliverer.deliver_due(utc_now() + timedelta(seconds=2))
        assert (result.withheld, result.sent, result.failed) == (1, 2, 0)
    finally:
        await service.runtime.stop()
    states = {r["notification_id"]: r["state"] for r in await delivery_rows(stack, isolation)}
    assert states == {first.notification_id: "sent", escalation.notification_id: "withheld",
                      on_a_strangers_word.notification_id: "sent", reminder.notification_id: "sent"}


async def test_deliveries_share_one_smtp_connection_and_a_dropped_or_refusing_one_records_as_before(
    stack, isolation, smtp_server, make_request
):
    """Pooled SMTP connections under the delivery loop: several deliveries over one connection; the server
    closing it ("421", then hanging up) as the next email starts costs nothing but a fresh connection, the
    email sent and recorded once; a refusal is still recorded as a failure and reported."""
    settings = notify_settings(stack, isolation, smtp_server.port, delivery_loop=False)
    service = await start(settings, consume=False)
    mailbox = smtp_server.mailbox
    try:
        first = [fresh(make_request, recipient=recipient((ChannelKind.EMAIL, f"dsl{i}@oakfield.example")))
                 for i in range(3)]
        for request in first:  # one after another (the emails of one round go side by side)
            await handle_directly(service, request)
            assert (await service.deliverer.deliver_due(utc_now())).sent == 1
        assert len(mailbox.messages) == 3 and mailbox.connections == 1

        mailbox.close_after_messages = 3  # the pooled connection is closed by the server at the next MAIL
        dropped = fresh(make_request)
        await handle_directly(service, dropped)
        assert (await service.deliverer.deliver_due(utc_now())).sent == 1
        assert mailbox.connections == 2
        assert [str(m["Message-ID"]) for m in mailbox.messages[3:]] == [f"<{dropped.notification_id}@oakfield.example>"]

        mailbox.close_after_messages = None
        mailbox.refuse_recipients_with = "550 5.1.1 no such user"
        refused = fresh(make_request, recipient=recipient((ChannelKind.EMAIL, "gone@oakfield.example")))
        await handle_directly(service, refused)
        assert (await service.deliverer.deliver_due(utc_now())).failed == 1
        delivered = await outcome_events(stack, isolation, "notifications.delivered", expect=4, timeout=20)
        [failed] = await outcome_events(stack, isolation, "notifications.failed", expect=1, timeout=20)
    finally:
        await service.runtime.stop()
    assert sorted(e.data["notification_id"] for e in delivered) == sorted(
        r.notification_id for r in [*first, dropped]
    )
    assert all(e.data["attempts"] == 1 for e in delivered)
    assert failed.data["notification_id"] == refused.notification_id
    assert failed.data["errors"] == ["email: recipient refused: 550 5.1.1 no such user"]
    rows = {r["notification_id"]: r for r in await delivery_rows(stack, isolation)}
    assert rows[dropped.notification_id]["state"] == "sent" and rows[dropped.notification_id]["total_attempts"] == 1
    assert rows[refused.notification_id]["state"] == "failed"
    assert len(mailbox.messages) == 4


async def test_a_send_is_recorded_as_the_row_stands_when_another_worker_changed_it_since_the_claim(
    stack, isolation, smtp_server, make_request
):
    """Sends are recorded in one statement for rows still as claimed. A row another worker changed meanwhile (its
    lease outlived: attempts recorded) is still marked sent, with its true count; one already finished is left
    alone and reported by nobody twice."""
    settings = notify_settings(stack, isolation, smtp_server.port, delivery_loop=False)
    service = await start(settings, consume=False)
    try:
        as_claimed, retried_meanwhile, finished_meanwhile = (fresh(make_request) for _ in range(3))
        await handle_directly(service, as_claimed, retried_meanwhile, finished_meanwhile)
        schema = f"{isolation}_notify"
        async with service.runtime.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT d.*, NULL::timestamptz AS acknowledged_at, false AS ack_by_recipient FROM deliveries d"
                " ORDER BY notification_id"
            )
            items = {r["notification_id"]: _Item.from_row(r) for r in rows}
        admin = await asyncpg.connect(stack.admin_dsn)
        try:
            await admin.execute(
                f"UPDATE {schema}.deliveries SET total_attempts = 2 WHERE notification_id = $1",  # noqa: S608
                retried_meanwhile.notification_id,
            )
            await admin.execute(
                f"UPDATE {schema}.deliveries SET state = 'sent' WHERE notification_id = $1",  # noqa: S608
                finished_meanwhile.notification_id,
            )
        finally:
            await admin.close()
        batch = _Batch(ChannelKind.EMAIL, "dsl@oakfield.example", tuple(items.values()))
        receipt = DeliveryReceipt(ChannelKind.EMAIL, message_id="<m@oakfield.example>", provider_id="250 queued")
        async with service.runtime.pool.acquire() as conn:
            assert await service.deliverer._record_sent(conn, batch, receipt, utc_now()) == 2  # noqa: SLF001
        delivered = await outcome_events(stack, isolation, "notifications.delivered", expect=3, timeout=2)
    finally:
        await service.runtime.stop()
    attempts = {e.data["notification_id"]: e.data["attempts"] for e in delivered}
    assert attempts == {as_claimed.notification_id: 1, retried_meanwhile.notification_id: 3}
    states = {r["notification_id"]: (r["state"], r["total_attempts"]) for r in await delivery_rows(stack, isolation)}
    assert states == {
        as_claimed.notification_id: ("sent", 1),
        retried_meanwhile.notification_id: ("sent", 3),
        finished_meanwhile.notification_id: ("sent", 0),
    }


async def test_the_most_urgent_due_notice_is_claimed_first_whatever_waits_before_it(
    stack, isolation, smtp_server, make_request
):
    """After an outage a backlog of routine notices is due; a new illegal-class notice, due last, goes in the first
    round, not after the backlog (rounds claim `delivery_batch` rows: 2 here, behind 4 routine ones)."""
    settings = notify_settings(stack, isolation, smtp_server.port, delivery_loop=False, delivery_batch=2)
    service = await start(settings, consume=False)
    try:
        routine = [fresh(make_request, incident_class=IncidentClass.INAPPROPRIATE, urgency=Urgency.NORMAL,
                         recipient=recipient((ChannelKind.EMAIL, f"coordinator{i}@oakfield.example")))
                   for i in range(4)]
        await handle_directly(service, *routine)
        urgent = fresh(make_request, recipient=recipient((ChannelKind.EMAIL, "head@oakfield.example")))
        await handle_directly(service, urgent)
        result = await service.deliverer.deliver_due(utc_now() + timedelta(seconds=1))
    finally:
        await service.runtime.stop()
    assert result.sent == 5
    first_round = {m["To"] for m in smtp_server.mailbox.messages[:2]}
    assert "head@oakfield.example" in first_round, [m["To"] for m in smtp_server.mailbox.messages]


async def test_each_round_of_a_long_pass_runs_at_its_own_time(stack, isolation, smtp_server, make_request):
    """A pass runs rounds until nothing is due. Each round's leases, retry times and recorded times start when the
    round does: with one clock for the whole pass, a round late in a long pass took leases that had already run
    out (another worker could claim and send the same notices) and recorded sends as earlier than they were."""
    smtp_server.mailbox.mail_delay = 0.6
    settings = notify_settings(stack, isolation, smtp_server.port, delivery_loop=False, delivery_batch=1)
    service = await start(settings, consume=False)
    try:
        first, second = fresh(make_request), fresh(make_request)
        await handle_directly(service, first, second)
        now = utc_now() + timedelta(seconds=1)
        assert (await service.deliverer.deliver_due(now)).sent == 2
    finally:
        await service.runtime.stop()
    finished = sorted(r["finished_at"] for r in await delivery_rows(stack, isolation))
    assert finished[0] == now
    assert finished[1] >= now + timedelta(seconds=0.5)


class _CapturingChannel:
    """Accepts every email and keeps the messages as the delivery loop handed them over."""

    kind = ChannelKind.EMAIL

    def __init__(self) -> None:
        self.messages: list[OutgoingMessage] = []

    async def send(self, message: OutgoingMessage, address: str) -> DeliveryReceipt:
        self.messages.append(message)
        return DeliveryReceipt(ChannelKind.EMAIL, message.message_id, "p-1")


async def test_the_channel_is_told_when_an_earlier_attempt_may_have_reached_the_provider(
    stack, isolation, smtp_server, make_request
):
    """A notice tried before, or claimed by a worker whose lease ran out (it may have sent and died before
    recording it), goes to the channel marked as maybe sent, so GOV.UK Notify is asked before sending again."""
    settings = notify_settings(stack, isolation, smtp_server.port, delivery_loop=False)
    service = await start(settings, consume=False)
    channel = _CapturingChannel()
    try:
        first_try, tried_before, lease_ran_out = (fresh(make_request) for _ in range(3))
        await handle_directly(service, first_try, tried_before, lease_ran_out)
        schema = f"{isolation}_notify"
        admin = await asyncpg.connect(stack.admin_dsn)
        try:
            await admin.execute(f"UPDATE {schema}.deliveries SET attempts = 1, total_attempts = 1"  # noqa: S608
                                " WHERE notification_id = $1", tried_before.notification_id)
            await admin.execute(f"UPDATE {schema}.deliveries SET state = 'sending'"  # noqa: S608
                                " WHERE notification_id = $1", lease_ran_out.notification_id)
        finally:
            await admin.close()
        config = DeliveryConfig(ack_secret=TOKEN_SECRET, public_base_url=PUBLIC)
        deliverer = Deliverer(lambda: service.runtime.pool, {ChannelKind.EMAIL: channel}, config)
        assert (await deliverer.deliver_due(utc_now() + timedelta(seconds=1))).sent == 3
    finally:
        await service.runtime.stop()
    flags = {m.notification_ids[0]: m.maybe_sent_before for m in channel.messages}
    assert flags == {first_try.notification_id: False, tried_before.notification_id: True,
                     lease_ran_out.notification_id: True}
