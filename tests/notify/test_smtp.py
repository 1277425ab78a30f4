"""Email over SMTP against real aiosmtpd servers (notify.channels.smtp)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable

import pytest
from support.helpers import eventually

from common.contracts import ChannelKind
from notify.channels.base import PermanentDeliveryError, RetryableDeliveryError
from notify.channels.smtp import SmtpChannel, SmtpSettings
from notify.messages import Links, render

NOW = dt.datetime(2025, 3, 4, 9, 30, tzinfo=dt.UTC)
LINKS = Links(acknowledge="https://safety.example/ack/TOKEN123")


@pytest.fixture
async def channel() -> AsyncIterator[Callable[..., SmtpChannel]]:
    """Makes SMTP channels; their pooled connections are closed (QUIT) at the end of the test."""
    made: list[SmtpChannel] = []

    def make(port: int, **settings: object) -> SmtpChannel:
        base: dict[str, object] = {
            "host": "127.0.0.1",
            "port": port,
            "sender": "alerts@safety.example",
            "timeout_seconds": 5,
        }
        base.update(settings)
        made.append(SmtpChannel(SmtpSettings(**base), clock=lambda: NOW))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for one in made:
        await one.aclose()


def closed_port() -> int:
    from socket import socket

    with socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_email_is_delivered_with_a_stable_message_id(channel, smtp_server, make_request):
    message = render(make_request(), LINKS)
    receipt = await channel(smtp_server.port).send(message, "dsl@oakfield.example")

    [email] = smtp_server.mailbox.messages
    assert email["Message-ID"] == "<6f1c2a7e-3b9d-4c55-9e0a-1d2b3c4d5e6f@safety.example>"
    assert email["Subject"] == message.subject
    assert email["To"] == "dsl@oakfield.example" and email["From"] == "alerts@safety.example"
    assert email["Auto-Submitted"] == "auto-generated"
    assert email["Date"] == "Tue, 04 Mar 2025 09:30:00 +0000"
    assert LINKS.acknowledge in email.get_payload(decode=True).decode()
    assert smtp_server.mailbox.envelopes[0].rcpt_tos == ["dsl@oakfield.example"]
    assert receipt.channel is ChannelKind.EMAIL
    assert receipt.provider_id == email["Message-ID"] and "queued as TEST123" in receipt.detail

    await channel(smtp_server.port).send(message, "dsl@oakfield.example")
    assert smtp_server.mailbox.messages[1]["Message-ID"] == email["Message-ID"]


async def test_a_451_is_retryable_and_the_retry_succeeds(channel, smtp_server, make_request):
    smtp_server.mailbox.data_replies.append("451 4.3.0 Try again later")
    message = render(make_request(), LINKS)
    with pytest.raises(RetryableDeliveryError, match="451"):
        await channel(smtp_server.port).send(message, "dsl@oakfield.example")
    assert smtp_server.mailbox.messages == []
    await channel(smtp_server.port).send(message, "dsl@oakfield.example")
    assert len(smtp_server.mailbox.messages) == 1


async def test_a_550_recipient_refusal_is_permanent(channel, smtp_server, make_request):
    smtp_server.mailbox.refuse_recipients_with = "550 5.1.1 No such user here"
    with pytest.raises(PermanentDeliveryError, match="550"):
        await channel(smtp_server.port).send(render(make_request(), LINKS), "nobody@oakfield.example")


async def test_a_554_on_data_is_permanent(channel, smtp_server, make_request):
    smtp_server.mailbox.data_replies.append("554 5.7.1 Message rejected")
    with pytest.raises(PermanentDeliveryError):
        await channel(smtp_server.port).send(render(make_request(), LINKS), "dsl@oakfield.example")


@pytest.mark.parametrize("address", ["not-an-address", "dsl@oakfield.example\r\nBcc: x@evil.example", "", "a b@c.d"])
async def test_an_unusable_address_is_permanent_and_nothing_is_sent(channel, smtp_server, make_request, address):
    with pytest.raises(PermanentDeliveryError, match="not a usable email address"):
        await channel(smtp_server.port).send(render(make_request(), LINKS), address)
    assert smtp_server.mailbox.messages == []


async def test_connection_refused_is_retryable(channel, make_request):
    with pytest.raises(RetryableDeliveryError, match="unreachable|Connect"):
        await channel(closed_port()).send(render(make_request(), LINKS), "dsl@oakfield.example")


async def test_a_server_that_never_answers_times_out_as_retryable(channel, silent_tcp_port, make_request):
    with pytest.raises(RetryableDeliveryError):
        await channel(silent_tcp_port, timeout_seconds=0.3).send(render(make_request(), LINKS), "dsl@oakfield.example")


async def test_starttls_and_authentication_when_configured(channel, smtp_starttls_server, tls, make_request):
    secure = channel(
        smtp_starttls_server.port, starttls=True, tls_context=tls.client, username="notify", password="correct horse"
    )
    await secure.send(render(make_request(), LINKS), "dsl@oakfield.example")
    assert smtp_starttls_server.mailbox.logins == ["notify"]
    assert len(smtp_starttls_server.mailbox.messages) == 1


async def test_wrong_credentials_are_permanent(channel, smtp_starttls_server, tls, make_request):
    secure = channel(smtp_starttls_server.port, starttls=True, tls_context=tls.client, username="notify", password="no")
    with pytest.raises(PermanentDeliveryError, match="535"):
        await secure.send(render(make_request(), LINKS), "dsl@oakfield.example")


async def test_a_server_that_demands_starttls_refuses_plain_mail(channel, smtp_starttls_server, make_request):
    with pytest.raises(PermanentDeliveryError):
        await channel(smtp_starttls_server.port).send(render(make_request(), LINKS), "dsl@oakfield.example")


def test_credentials_without_tls_to_a_remote_relay_are_refused_at_start():
    with pytest.raises(ValueError, match="STARTTLS"):
        SmtpSettings(host="smtp.example", port=587, sender="a@b.example", username="u", password="p")


# ---------------------------------------------------------------- pooled connections


def message_ids(server) -> list[str]:
    return [str(m["Message-ID"]) for m in server.mailbox.messages]


def requests(make_request, n: int) -> list:
    return [render(make_request(notification_id=f"n-{i:03d}"), LINKS) for i in range(n)]


async def test_several_emails_go_over_one_connection(channel, smtp_server, make_request):
    mail = channel(smtp_server.port)
    for message in requests(make_request, 5):
        await mail.send(message, "dsl@oakfield.example")

    assert len(smtp_server.mailbox.messages) == 5
    assert smtp_server.mailbox.connections == 1 and mail.pool.opened_total == 1
    assert mail.pool.idle_open == 1


async def test_emails_sent_side_by_side_share_at_most_the_configured_connections(channel, smtp_server, make_request):
    mail = channel(smtp_server.port, max_connections=3)
    await asyncio.gather(*(mail.send(m, "dsl@oakfield.example") for m in requests(make_request, 12)))

    assert len(set(message_ids(smtp_server))) == 12
    assert smtp_server.mailbox.connections <= 3 and mail.pool.opened_total <= 3


async def test_one_tls_login_serves_several_emails(channel, smtp_starttls_server, tls, make_request):
    secure = channel(
        smtp_starttls_server.port, starttls=True, tls_context=tls.client, username="notify", password="correct horse"
    )
    for message in requests(make_request, 3):
        await secure.send(message, "dsl@oakfield.example")
    assert smtp_starttls_server.mailbox.logins == ["notify"]
    assert len(smtp_starttls_server.mailbox.messages) == 3 and smtp_starttls_server.mailbox.connections == 1


async def test_a_connection_the_server_dropped_while_idle_is_replaced_and_the_email_sent_once(
    channel, start_smtp_server, make_request
):
    server = start_smtp_server(timeout=0.3)  # aiosmtpd hangs up on a session idle this long
    mail = channel(server.port)
    first, second = requests(make_request, 2)
    await mail.send(first, "dsl@oakfield.example")

    async def dropped() -> bool:
        return mail.pool.idle == 1 and mail.pool.idle_open == 0

    await eventually(dropped, timeout=10, what="the server to drop the idle connection")
    await mail.send(second, "dsl@oakfield.example")

    assert message_ids(server) == ["<n-000@safety.example>", "<n-001@safety.example>"]
    assert server.mailbox.connections == 2 and server.mailbox.mail_commands == 2


async def test_a_reused_connection_closing_at_mail_sends_the_email_once_on_a_fresh_one(
    channel, smtp_server, make_request
):
    # The server had timed the session out as the next email began: "421 closing" to MAIL, then hangs up.
    smtp_server.mailbox.close_after_messages = 1
    mail = channel(smtp_server.port)
    first, second = requests(make_request, 2)
    await mail.send(first, "dsl@oakfield.example")
    receipt = await mail.send(second, "dsl@oakfield.example")

    assert message_ids(smtp_server) == ["<n-000@safety.example>", "<n-001@safety.example>"]
    assert receipt.provider_id == "<n-001@safety.example>"
    assert smtp_server.mailbox.connections == 2 and mail.pool.opened_total == 2
    assert smtp_server.mailbox.mail_commands == 3  # the refused MAIL, then the one on the fresh connection


async def test_a_421_on_a_fresh_connection_is_a_retryable_failure_without_a_second_try(
    channel, smtp_server, make_request
):
    smtp_server.mailbox.close_after_messages = 0  # every MAIL: "421 closing"
    mail = channel(smtp_server.port)
    with pytest.raises(RetryableDeliveryError, match="421"):
        await mail.send(render(make_request(), LINKS), "dsl@oakfield.example")
    assert smtp_server.mailbox.messages == [] and smtp_server.mailbox.mail_commands == 1
    assert mail.pool.opened_total == 1


async def test_a_reused_connection_that_stops_answering_is_a_retryable_failure_without_a_second_try(
    channel, smtp_server, make_request
):
    mail = channel(smtp_server.port, timeout_seconds=0.3)
    first, second = requests(make_request, 2)
    await mail.send(first, "dsl@oakfield.example")
    smtp_server.mailbox.mail_delay = 1.0  # hung: a fresh connection would be waited on again
    with pytest.raises(RetryableDeliveryError, match="Timeout"):
        await mail.send(second, "dsl@oakfield.example")
    assert mail.pool.opened_total == 1 and smtp_server.mailbox.mail_commands == 2
    assert message_ids(smtp_server) == ["<n-000@safety.example>"]


async def test_a_refusal_on_a_reused_connection_is_still_a_permanent_failure(channel, smtp_server, make_request):
    mail = channel(smtp_server.port)
    first, second, third = requests(make_request, 3)
    await mail.send(first, "dsl@oakfield.example")
    smtp_server.mailbox.refuse_recipients_with = "550 5.1.1 No such user here"
    with pytest.raises(PermanentDeliveryError, match="550"):
        await mail.send(second, "nobody@oakfield.example")
    assert mail.pool.opened_total == 1 and smtp_server.mailbox.mail_commands == 2  # not tried again

    smtp_server.mailbox.refuse_recipients_with = None
    await mail.send(third, "dsl@oakfield.example")  # on a new connection: the refused session is not reused
    assert message_ids(smtp_server) == ["<n-000@safety.example>", "<n-002@safety.example>"]
    assert mail.pool.opened_total == 2


async def test_a_server_gone_since_the_last_email_is_a_retryable_failure(channel, start_smtp_server, make_request):
    server = start_smtp_server()
    mail = channel(server.port)
    first, second = requests(make_request, 2)
    await mail.send(first, "dsl@oakfield.example")
    server.stop()
    with pytest.raises(RetryableDeliveryError, match="unreachable|Connect|Disconnected"):
        await mail.send(second, "dsl@oakfield.example")
    assert message_ids(server) == ["<n-000@safety.example>"]


async def test_an_idle_connection_is_closed_after_idle_seconds(channel, smtp_server, make_request):
    mail = channel(smtp_server.port, idle_seconds=0.2)
    await mail.send(render(make_request(), LINKS), "dsl@oakfield.example")

    async def closed() -> bool:
        return mail.pool.idle == 0

    await eventually(closed, timeout=10, what="the idle connection to be closed")


async def test_a_connection_carries_at_most_messages_per_connection(channel, smtp_server, make_request):
    mail = channel(smtp_server.port, messages_per_connection=2)
    for message in requests(make_request, 5):
        await mail.send(message, "dsl@oakfield.example")
    assert len(smtp_server.mailbox.messages) == 5 and smtp_server.mailbox.connections == 3


async def test_an_address_outside_ascii_needs_smtputf8(channel, start_smtp_server, make_request):
    plain = start_smtp_server(enable_SMTPUTF8=False)  # aiosmtpd's Controller enables it by default
    with pytest.raises(PermanentDeliveryError, match="SMTPUTF8"):
        await channel(plain.port).send(render(make_request(), LINKS), "dsl.gŵyn@oakfield.example")
    assert plain.mailbox.messages == []

    utf8 = start_smtp_server()
    await channel(utf8.port).send(render(make_request(), LINKS), "dsl.gŵyn@oakfield.example")
    [email] = utf8.mailbox.messages
    assert email["To"] == "dsl.gŵyn@oakfield.example"
    assert utf8.mailbox.envelopes[0].rcpt_tos == ["dsl.gŵyn@oakfield.example"]
