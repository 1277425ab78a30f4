"""Real local servers for the notify adapters: aiosmtpd SMTP servers and a scriptable HTTP server."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common.contracts import (
    ChannelAddress,
    ChannelKind,
    IncidentClass,
    NotificationRequested,
    Recipient,
    Reminder,
    Urgency,
)

NOW = dt.datetime(2025, 3, 4, 9, 30, tzinfo=dt.UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- notification requests


@pytest.fixture
def make_request() -> Callable[..., NotificationRequested]:
    def build(**overrides: Any) -> NotificationRequested:
        fields: dict[str, Any] = {
            "notification_id": "6f1c2a7e-3b9d-4c55-9e0a-1d2b3c4d5e6f",
            "incident_id": "0b7e8f90-1a2b-4c3d-8e9f-a0b1c2d3e4f5",
            "reference": "OSI-7K2QF",
            "school_id": "school-a",
            "school_name": "Oakfield Primary School",
            "incident_class": IncidentClass.ILLEGAL,
            "urgency": Urgency.IMMEDIATE,
            "level": 1,
            "generation": 1,
            "recipient": Recipient(
                role="dsl",
                name="Ms Patel",
                channels=[ChannelAddress(kind=ChannelKind.EMAIL, address="dsl@oakfield.example")],
            ),
            "reminders": [
                Reminder(
                    code="do_not_view_copy_share_delete",
                    text="Do not view, copy, share or delete the imagery.",
                    owner_role="dsl",
                ),
                Reminder(
                    code="refer_police_ceop_iwf",
                    text="Refer to the police, CEOP and the IWF.",
                    owner_role="dsl",
                    due_at=NOW + dt.timedelta(hours=1),
                ),
                Reminder(
                    code="secure_device",
                    text="Secure the device and isolate it from the network.",
                    owner_role="it_technician",
                ),
            ],
            "reason": "first notice",
        }
        fields.update(overrides)
        return NotificationRequested(**fields)

    return build


# ---------------------------------------------------------------- SMTP


@dataclass
class Mailbox:
    """What the SMTP server accepted, and how it should answer next."""

    messages: list[Message] = field(default_factory=list)
    envelopes: list[Envelope] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    data_replies: deque[str] = field(default_factory=deque)  # e.g. "451 ..." answered once each
    refuse_recipients_with: str | None = None  # e.g. "550 5.1.1 no such user"
    on_accept: Callable[[], Awaitable[None]] | None = None  # runs as a message is accepted, before the answer
    peers: list[tuple[str, int]] = field(default_factory=list)  # the client end of each accepted message
    mail_commands: int = 0
    # A MAIL on a connection that has carried this many messages is answered "421 closing" and the server
    # hangs up, as one does when it times the session out or shuts down (RFC 5321 3.8).
    close_after_messages: int | None = None
    mail_delay: float = 0.0  # seconds before answering MAIL: a server that has hung

    @property
    def connections(self) -> int:
        """Distinct connections that delivered at least one accepted message."""
        return len(set(self.peers))

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.mail_commands += 1
        if self.mail_delay:
            await asyncio.sleep(self.mail_delay)
        carried = self.peers.count(session.peer)
        if self.close_after_messages is not None and carried >= self.close_after_messages:
            transport = server.transport
            assert transport is not None
            asyncio.get_running_loop().call_soon(transport.close)  # after the reply has been written
            return "421 4.4.2 closing this connection"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.refuse_recipients_with:
            return self.refuse_recipients_with
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:  # noqa: N802
        if self.data_replies:
            return self.data_replies.popleft()
        self.envelopes.append(envelope)
        self.peers.append(session.peer)
        self.messages.append(message_from_bytes(envelope.content or b"", policy=policy.default))
        if self.on_accept is not None:
            await self.on_accept()
        return "250 2.0.0 Ok: queued as TEST123"


@dataclass
class SmtpServer:
    port: int
    mailbox: Mailbox
    controller: Controller | None = None  # set when the test may stop it early

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield SmtpServer(controller.port, mailbox)
    finally:
        controller.stop()


@pytest.fixture
def start_smtp_server() -> Iterator[Callable[..., SmtpServer]]:
    """Starts SMTP servers with aiosmtpd options of the test's choosing (an idle `timeout`, SMTPUTF8...);
    the test may stop one early; the rest are stopped at the end."""
    started: list[SmtpServer] = []

    def start(**options: Any) -> SmtpServer:
        mailbox = Mailbox()
        controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), **options)
        controller.start()
        started.append(SmtpServer(controller.port, mailbox, controller))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@dataclass
class TlsFiles:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A self-signed certificate for 127.0.0.1, trusted by the client context only."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
        .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    folder: Path = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return TlsFiles(server, client)


@pytest.fixture
def smtp_starttls_server(tls: TlsFiles) -> Iterator[SmtpServer]:
    """Requires STARTTLS, and AUTH (only over TLS) with user 'notify' / 'correct horse'."""
    mailbox = Mailbox()

    def authenticate(server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth: Any) -> AuthResult:
        ok = isinstance(auth, LoginPassword) and auth.login == b"notify" and auth.password == b"correct horse"
        if ok:
            mailbox.logins.append(auth.login.decode())
        return AuthResult(success=ok, handled=False)  # unhandled: aiosmtpd answers 535 itself

    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=tls.server,
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield SmtpServer(controller.port, mailbox)
    finally:
        controller.stop()


@pytest.fixture
async def silent_tcp_port() -> Any:
    """Accepts connections and never says a word: an SMTP server that has hung."""

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield port
    server.close()


# ---------------------------------------------------------------- HTTP


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Scripted:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class HttpServer:
    """A real HTTP server on 127.0.0.1 answering from a script, recording every request it receives."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: deque[Scripted] = deque()
        self.default = Scripted(201, {"id": "740e5834-3a29-46b4-9a6f-16142fde533a"})
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's hook name
                self.do_POST(method="GET")

            def do_POST(self, method: str = "POST") -> None:  # noqa: N802 - http.server's hook name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.requests.append(
                    Recorded(method, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                answer = outer.script.popleft() if outer.script else outer.default
                time.sleep(answer.delay)
                payload = b"" if answer.body is None else json.dumps(answer.body).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in answer.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def then(self, status: int, body: Any = None, headers: dict[str, str] | None = None, delay: float = 0.0) -> None:
        self.script.append(Scripted(status, body, headers or {}, delay))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    server = HttpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
