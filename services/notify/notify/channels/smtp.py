"""Email over SMTP (aiosmtplib): the embedded sink in development, the school's or trust's relay in use."""

from __future__ import annotations

import functools
import re
import socket
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime

import aiosmtplib

from common.contracts import ChannelKind
from common.events import Clock, utc_now
from notify.channels.base import (
    DeliveryError,
    DeliveryReceipt,
    OutgoingMessage,
    PermanentDeliveryError,
    RetryableDeliveryError,
)

# Deliberately narrow: one mailbox, no display name, no comments, nothing that could smuggle a header.
_ADDRESS = re.compile(r"[^@\s<>(),;:\"\[\]\\]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    message_id_domain: str | None = None  # default: the sender's domain
    starttls: bool = False
    implicit_tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_seconds: float = 30.0
    tls_context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        if self.username and not (self.starttls or self.implicit_tls) and self.host not in _LOOPBACK:
            raise ValueError("SMTP credentials need STARTTLS or implicit TLS: they would cross the network in clear")
        if self.starttls and self.implicit_tls:
            raise ValueError("choose STARTTLS or implicit TLS, not both")
        if not _ADDRESS.fullmatch(self.sender):
            raise ValueError("SMTP sender must be a plain address like alerts@school.example")

    @property
    def domain(self) -> str:
        return self.message_id_domain or self.sender.rsplit("@", 1)[1]


class SmtpChannel:
    def __init__(self, settings: SmtpSettings, *, clock: Clock = utc_now) -> None:
        self._settings = settings
        self._clock = clock

    @property
    def kind(self) -> ChannelKind:
        return ChannelKind.EMAIL

    def build(self, message: OutgoingMessage, address: str) -> EmailMessage:
        """The email as sent; its Message-ID is the same on every attempt so that mail clients fold repeats."""
        address = address.strip()
        if not _ADDRESS.fullmatch(address):
            raise PermanentDeliveryError("not a usable email address")
        email = EmailMessage()
        email["From"] = self._settings.sender
        email["To"] = address
        email["Subject"] = message.subject
        email["Date"] = format_datetime(self._clock())
        email["Message-ID"] = message.email_message_id(self._settings.domain)
        # RFC 3834: an automatic message; out-of-office replies should not answer it.
        email["Auto-Submitted"] = "auto-generated"
        email["X-Auto-Response-Suppress"] = "All"
        email.set_content(message.email_body)
        return email

    async def send(self, message: OutgoingMessage, address: str) -> DeliveryReceipt:
        email = self.build(message, address)
        s = self._settings
        try:
            _, reply = await aiosmtplib.send(
                email,
                hostname=s.host,
                port=s.port,
                username=s.username,
                password=s.password,
                start_tls=s.starttls,
                use_tls=s.implicit_tls,
                tls_context=s.tls_context,
                timeout=s.timeout_seconds,
                # Named once: left unset, aiosmtplib looks up the FQDN in a worker thread for every connection.
                local_hostname=_local_hostname(),
            )
        except aiosmtplib.SMTPException as exc:
            raise _classify(exc) from exc
        except OSError as exc:  # refused, reset, unreachable, TLS failure
            raise RetryableDeliveryError(f"SMTP server unreachable ({type(exc).__name__})") from exc
        return DeliveryReceipt(ChannelKind.EMAIL, message.message_id, str(email["Message-ID"]), reply.strip())


@functools.cache
def _local_hostname() -> str:
    """How this host introduces itself in EHLO."""
    return socket.getfqdn()


def _classify(exc: aiosmtplib.SMTPException) -> DeliveryError:
    """4xx is the server's "not now", 5xx its "never"; losing the connection is always worth another try."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        refused = exc.recipients[0]
        return _by_code(refused.code, f"recipient refused: {refused.code} {refused.message}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _by_code(exc.code, f"SMTP {type(exc).__name__}: {exc.code} {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return PermanentDeliveryError(f"SMTP server lacks a configured feature: {exc.message}")
    return RetryableDeliveryError(f"SMTP {type(exc).__name__}: {exc.message}")


def _by_code(code: int, reason: str) -> DeliveryError:
    if 500 <= code < 600:
        return PermanentDeliveryError(reason)
    return RetryableDeliveryError(reason)
