"""Email over SMTP against real aiosmtpd servers (notify.channels.smtp)."""

from __future__ import annotations

import datetime as dt

import pytest

from common.contracts import ChannelKind
from notify.channels.base import PermanentDeliveryError, RetryableDeliveryError
from notify.channels.smtp import SmtpChannel, SmtpSettings
from notify.messages import Links, render

NOW = dt.datetime(2025, 3, 4, 9, 30, tzinfo=dt.UTC)
LINKS = Links(acknowledge="https://safety.example/ack/TOKEN123")


def channel(port: int, **settings: object) -> SmtpChannel:
    base: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "sender": "alerts@safety.example",
        "timeout_seconds": 5,
    }
    base.update(settings)
    return SmtpChannel(SmtpSettings(**base), clock=lambda: NOW)  # type: ignore[arg-type]


def closed_port() -> int:
    from socket import socket

    with socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_email_is_delivered_with_a_stable_message_id(smtp_server, make_request):
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


async def test_a_451_is_retryable_and_the_retry_succeeds(smtp_server, make_request):
    smtp_server.mailbox.data_replies.append("451 4.3.0 Try again later")
    message = render(make_request(), LINKS)
    with pytest.raises(RetryableDeliveryError, match="451"):
        await channel(smtp_server.port).send(message, "dsl@oakfield.example")
    assert smtp_server.mailbox.messages == []
    await channel(smtp_server.port).send(message, "dsl@oakfield.example")
    assert len(smtp_server.mailbox.messages) == 1


async def test_a_550_recipient_refusal_is_permanent(smtp_server, make_request):
    smtp_server.mailbox.refuse_recipients_with = "550 5.1.1 No such user here"
    with pytest.raises(PermanentDeliveryError, match="550"):
        await channel(smtp_server.port).send(render(make_request(), LINKS), "nobody@oakfield.example")


async def test_a_554_on_data_is_permanent(smtp_server, make_request):
    smtp_server.mailbox.data_replies.append("554 5.7.1 Message rejected")
    with pytest.raises(PermanentDeliveryError):
        await channel(smtp_server.port).send(render(make_request(), LINKS), "dsl@oakfield.example")


@pytest.mark.parametrize("address", ["not-an-address", "dsl@oakfield.example\r\nBcc: x@evil.example", "", "a b@c.d"])
async def test_an_unusable_address_is_permanent_and_nothing_is_sent(smtp_server, make_request, address):
    with pytest.raises(PermanentDeliveryError, match="not a usable email address"):
        await channel(smtp_server.port).send(render(make_request(), LINKS), address)
    assert smtp_server.mailbox.messages == []


async def test_connection_refused_is_retryable(make_request):
    with pytest.raises(RetryableDeliveryError, match="unreachable|Connect"):
        await channel(closed_port()).send(render(make_request(), LINKS), "dsl@oakfield.example")


async def test_a_server_that_never_answers_times_out_as_retryable(silent_tcp_port, make_request):
    with pytest.raises(RetryableDeliveryError):
        await channel(silent_tcp_port, timeout_seconds=0.3).send(render(make_request(), LINKS), "dsl@oakfield.example")


async def test_starttls_and_authentication_when_configured(smtp_starttls_server, tls, make_request):
    secure = channel(
        smtp_starttls_server.port, starttls=True, tls_context=tls.client, username="notify", password="correct horse"
    )
    await secure.send(render(make_request(), LINKS), "dsl@oakfield.example")
    assert smtp_starttls_server.mailbox.logins == ["notify"]
    assert len(smtp_starttls_server.mailbox.messages) == 1


async def test_wrong_credentials_are_permanent(smtp_starttls_server, tls, make_request):
    secure = channel(smtp_starttls_server.port, starttls=True, tls_context=tls.client, username="notify", password="no")
    with pytest.raises(PermanentDeliveryError, match="535"):
        await secure.send(render(make_request(), LINKS), "dsl@oakfield.example")


async def test_a_server_that_demands_starttls_refuses_plain_mail(smtp_starttls_server, make_request):
    with pytest.raises(PermanentDeliveryError):
        await channel(smtp_starttls_server.port).send(render(make_request(), LINKS), "dsl@oakfield.example")


def test_credentials_without_tls_to_a_remote_relay_are_refused_at_start():
    with pytest.raises(ValueError, match="STARTTLS"):
        SmtpSettings(host="smtp.example", port=587, sender="a@b.example", username="u", password="p")
