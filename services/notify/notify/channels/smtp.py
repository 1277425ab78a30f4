"""Email over SMTP (aiosmtplib): the embedded sink in development, the school's or trust's relay in use."""

from __future__ import annotations

import functools
import re
import socket
import ssl
from dataclasses import dataclass, field
from email.utils import format_datetime

import aiosmtplib
import structlog

from common.contracts import ChannelKind
from common.events import Clock, utc_now
from notify.channels import mime
from notify.channels.base import (
    DeliveryError,
    DeliveryReceipt,
    OutgoingMessage,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from notify.channels.smtp_pool import Lease, SmtpPool

log = structlog.get_logger(__name__)

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
    max_connections: int = 8  # open at once to this server
    idle_seconds: float = 30.0  # an unused connection is closed after this, before the server's own timeout
    messages_per_connection: int = 100

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


@dataclass(frozen=True)
class Email:
    """One email as it goes over SMTP: envelope, bytes and the Message-ID quoted as the provider id."""

    sender: str
    recipient: str
    message_id: str
    data: bytes

    @property
    def needs_smtputf8(self) -> bool:
        return not (self.sender.isascii() and self.recipient.isascii())


class SmtpChannel:
    """Sends each email on a pooled connection (see `smtp_pool`). A connection found dead when the next email
    starts on it (the server dropped it while idle) costs a second try on a fresh connection, made only when
    the server cannot have taken the email: it failed before DATA. Any other failure is classified as it
    always was, and the delivery loop retries or falls back."""

    def __init__(self, settings: SmtpSettings, *, clock: Clock = utc_now) -> None:
        self._settings = settings
        self._clock = clock
        self.pool = SmtpPool(
            self._client, max_connections=settings.max_connections, idle_seconds=settings.idle_seconds,
            messages_per_connection=settings.messages_per_connection,
        )

    @property
    def kind(self) -> ChannelKind:
        return ChannelKind.EMAIL

    def build(self, message: OutgoingMessage, address: str) -> Email:
        """The email as sent; its Message-ID is the same on every attempt so that mail clients fold repeats."""
        address = address.strip()
        if not (_ADDRESS.fullmatch(address) and address.isprintable()):
            raise PermanentDeliveryError("not a usable email address")
        message_id = message.email_message_id(self._settings.domain)
        data = mime.compose(
            sender=self._settings.sender, to=address, subject=message.subject,
            date=format_datetime(self._clock()), message_id=message_id, body=message.email_body,
        )
        return Email(self._settings.sender, address, message_id, data)

    async def send(self, message: OutgoingMessage, address: str) -> DeliveryReceipt:
        email = self.build(message, address)
        try:
            reply = await self._transmit(email)
        except aiosmtplib.SMTPException as exc:
            raise _classify(exc) from exc
        except OSError as exc:  # refused, reset, unreachable, TLS failure
            raise RetryableDeliveryError(f"SMTP server unreachable ({type(exc).__name__})") from exc
        return DeliveryReceipt(ChannelKind.EMAIL, message.message_id, email.message_id, reply.strip())

    async def aclose(self) -> None:
        await self.pool.aclose()

    async def _transmit(self, email: Email) -> str:
        async with self.pool.connection() as lease:
            try:
                await _envelope(lease.client, email)
            except _STALE as exc:
                if not lease.reused or (isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code != 421):
                    raise
                lease.keep = False
                log.info("notify.smtp_stale_connection", error=type(exc).__name__, messages_before=lease.messages)
            else:
                return await _content(lease, email)
        # The pooled connection had died; nothing of this email reached DATA on it.
        async with self.pool.connection(fresh=True) as lease:
            await _envelope(lease.client, email)
            return await _content(lease, email)

    def _client(self) -> aiosmtplib.SMTP:
        s = self._settings
        return aiosmtplib.SMTP(
            hostname=s.host, port=s.port, username=s.username, password=s.password, start_tls=s.starttls,
            use_tls=s.implicit_tls, tls_context=s.tls_context, timeout=s.timeout_seconds,
            # Named once: left unset, aiosmtplib looks up the FQDN in a worker thread for every connection.
            local_hostname=_local_hostname(),
        )


# How a connection that died while idle shows itself on its first commands: hung up (reset, EOF) or a
# "421 closing" reply. Not a read timeout: on a connection used within the idle limit that means a hung
# server, which a fresh connection would wait on again; it fails as it always did.
_STALE = (ConnectionError, aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPRecipientRefused)


async def _envelope(client: aiosmtplib.SMTP, email: Email) -> None:
    """MAIL FROM and RCPT TO: nothing here can make the server deliver the email."""
    options = [f"SIZE={len(email.data)}"] if client.supports_extension("size") else []
    encoding = "ascii"
    if email.needs_smtputf8:
        if not client.supports_extension("smtputf8"):
            raise aiosmtplib.SMTPNotSupported("SMTPUTF8 (the address is not ASCII)")
        options.append("SMTPUTF8")
        encoding = "utf-8"
    await client.mail(email.sender, options=options, encoding=encoding)
    await client.rcpt(email.recipient, encoding=encoding)


async def _content(lease: Lease, email: Email) -> str:
    reply = await lease.client.data(email.data)
    lease.sent()
    return reply.message


@functools.cache
def _local_hostname() -> str:
    """How this host introduces itself in EHLO."""
    return socket.getfqdn()


def _classify(exc: aiosmtplib.SMTPException) -> DeliveryError:
    """4xx is the server's "not now", 5xx its "never"; losing the connection is always worth another try."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return _by_code(exc.code, f"recipient refused: {exc.code} {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _by_code(exc.code, f"SMTP {type(exc).__name__}: {exc.code} {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return PermanentDeliveryError(f"SMTP server lacks a configured feature: {exc.message}")
    return RetryableDeliveryError(f"SMTP {type(exc).__name__}: {exc.message}")


def _by_code(code: int, reason: str) -> DeliveryError:
    if 500 <= code < 600:
        return PermanentDeliveryError(reason)
    return RetryableDeliveryError(reason)
