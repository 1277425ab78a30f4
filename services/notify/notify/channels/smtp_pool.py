"""Open, greeted (and, when configured, TLS-upgraded and logged-in) SMTP connections kept for the next email.

A connection per email cost a TCP handshake, the greeting, EHLO, perhaps STARTTLS and AUTH, and QUIT: more
of notify's CPU than the email itself. The pool bounds how many connections are open at once (a relay may
limit them per client), hands each to one sender at a time, most recently used first, closes one that has
been idle for `idle_seconds` (before the server's own timeout would) or has carried
`messages_per_connection` emails, and drops, never reuses, one that failed in any way: after an error the
session state is unknown.

Whether a failed send may be repeated on a fresh connection is the caller's decision (`smtp.SmtpChannel`):
the pool only says whether the connection it handed out had been used before.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiosmtplib
import structlog

log = structlog.get_logger(__name__)

Opener = Callable[[], aiosmtplib.SMTP]  # an unconnected client, carrying the server's settings


@dataclass(eq=False)
class Lease:
    """One connection handed to one sender. `reused`: it has carried an email before this one."""

    client: aiosmtplib.SMTP
    reused: bool
    messages: int = 0
    idle_since: float = field(default_factory=time.monotonic)
    _expiry: asyncio.TimerHandle | None = None
    keep: bool = True  # cleared by the sender when the session can no longer be trusted

    def sent(self) -> None:
        self.messages += 1


class SmtpPool:
    def __init__(
        self,
        opener: Opener,
        *,
        max_connections: int = 8,
        idle_seconds: float = 30.0,
        messages_per_connection: int = 100,
        quit_timeout: float = 5.0,
    ) -> None:
        if max_connections < 1 or idle_seconds <= 0 or messages_per_connection < 1:
            raise ValueError("an SMTP pool needs max_connections >= 1, idle_seconds > 0, messages >= 1")
        self._open = opener
        self._slots = asyncio.Semaphore(max_connections)
        self._max_connections = max_connections
        self._in_use = 0
        self._idle: list[Lease] = []  # most recently used last
        self._idle_seconds = idle_seconds
        self._max_messages = messages_per_connection
        self._quit_timeout = quit_timeout
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        self.opened_total = 0  # connections opened since start: what a test or a metric can watch

    @property
    def idle(self) -> int:
        """Connections waiting for the next email, including any the server has closed meanwhile."""
        return len(self._idle)

    @property
    def idle_open(self) -> int:
        """Idle connections still open at our end (the server has not hung up, as far as we have heard)."""
        return sum(lease.client.is_connected for lease in self._idle)

    @contextlib.asynccontextmanager
    async def connection(self, *, fresh: bool = False) -> AsyncIterator[Lease]:
        """A connected client for one email. An exception leaving the block, or `lease.keep = False`,
        closes the connection; otherwise it goes back to the pool. `fresh`: never one used before."""
        if self._closed:
            raise aiosmtplib.SMTPServerDisconnected("the SMTP pool is closed")
        async with self._slots:
            self._in_use += 1
            try:
                lease = None if fresh else self._take_idle()
                if lease is None:
                    while self._idle and self._in_use + len(self._idle) > self._max_connections:
                        self._discard(self._idle.pop(0))  # the least recently used makes room
                    lease = Lease(await self._connect(), reused=False)
                try:
                    yield lease
                except BaseException as exc:
                    # A refusal leaves a session that can still say goodbye; anything else may not.
                    self._discard(lease, polite=isinstance(exc, aiosmtplib.SMTPResponseException))
                    raise
                if lease.keep and not self._closed and lease.messages < self._max_messages:
                    self._put_idle(lease)
                else:
                    self._discard(lease)
            finally:
                self._in_use -= 1

    async def aclose(self) -> None:
        """Say QUIT on every idle connection; a connection in use is closed when it comes back."""
        self._closed = True
        while self._idle:
            self._discard(self._idle.pop())
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # ------------------------------------------------------------------ internals

    async def _connect(self) -> aiosmtplib.SMTP:
        client = self._open()
        await client.connect()  # greeting, then STARTTLS and AUTH (each after an EHLO) as configured
        try:
            if client.is_ehlo_or_helo_needed:  # so that the server's extensions (SIZE, SMTPUTF8) are known
                try:
                    await client.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await client.helo()
        except BaseException:
            client.close()
            raise
        self.opened_total += 1
        return client

    def _take_idle(self) -> Lease | None:
        while self._idle:
            lease = self._idle.pop()
            if lease._expiry is not None:
                lease._expiry.cancel()
                lease._expiry = None
            if lease.client.is_connected:  # the server has not closed it meanwhile
                lease.reused = True
                lease.keep = True
                return lease
            log.info("notify.smtp_connection_dropped_while_idle", idle_seconds=time.monotonic() - lease.idle_since)
        return None

    def _put_idle(self, lease: Lease) -> None:
        lease.idle_since = time.monotonic()
        lease._expiry = asyncio.get_running_loop().call_later(self._idle_seconds, self._expire, lease)
        self._idle.append(lease)

    def _expire(self, lease: Lease) -> None:
        if lease in self._idle:
            self._idle.remove(lease)
            self._discard(lease)

    def _discard(self, lease: Lease, *, polite: bool = True) -> None:
        if lease._expiry is not None:
            lease._expiry.cancel()
            lease._expiry = None
        client = lease.client
        if not (polite and client.is_connected):
            client.close()  # also releases the client's connect lock
            return
        task = asyncio.get_running_loop().create_task(self._quit(client))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _quit(self, client: aiosmtplib.SMTP) -> None:
        try:
            await client.quit(timeout=self._quit_timeout)
        except (aiosmtplib.SMTPException, OSError):
            pass  # the server went first; nothing is lost
        finally:
            client.close()
