"""Notify speed: notifications delivered/s to a local SMTP server and to a local webhook receiver, and the
delay from `notifications.requested` on the broker to the message accepted by the receiver.

The real notify service (`notify.main.build`: consumer with inbox, deliveries table, delivery loop woken by
LISTEN/NOTIFY, SMTP and Standard Webhooks channels, outcome events through the outbox) runs in the bench
process on the embedded servers. The receivers are real servers on 127.0.0.1 in threads of the bench process:
an aiosmtpd SMTP server (what the devstack sink is built on, without its per-message file and fsync) and an
http.server webhook receiver; each notes when a message arrives, by its Message-ID / webhook-id, which notify
derives from the notification id. Requests are illegal-class, immediate (never held by the throttle), to
one of 20 addresses, as triage would publish them.

Ceilings, in the same run: bare aiosmtplib sends (on kept connections, as notify's pool keeps them) and bare
httpx POSTs to the same receivers, with the same number in flight as notify's delivery concurrency (16), and
no database or broker.

CPU per delivered message, because wall figures on a shared 2-core machine move with the neighbours: the
bench's main thread (notify's event loop, plus the small producer; the receivers run in other threads), and
the embedded servers (PostgreSQL and the broker, the bench's child processes), each over the burst.
`python -m bench.notify` runs these rows alone on fresh embedded servers.
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
from aiokafka import AIOKafkaProducer
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.proc import below_cpu, load_average
from bench.triage import Figures, pct
from common.contracts import (
    ChannelAddress,
    ChannelKind,
    IncidentClass,
    NotificationRequested,
    Recipient,
    Reminder,
    Urgency,
)
from common.events import CloudEvent, new_event
from common.topics import EventType, Topic
from devstack.ports import free_port

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"bench-webhook-signing-key-32byte").decode()
TOKEN_SECRET = "bench-token-secret-0123456789abcdef-0123456789"  # noqa: S105 - a bench's own secret
CONCURRENCY = 16  # notify's default delivery_concurrency


class Arrivals:
    """When each message id arrived (perf_counter), written from the receivers' threads."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def note(self, message_id: str) -> None:
        with self._lock:
            self.at.setdefault(message_id, time.perf_counter())

    async def wait_for(self, ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(i not in self.at for i in ids):
            if time.monotonic() > deadline:
                missing = sum(i not in self.at for i in ids)
                raise TimeoutError(f"{missing} of {len(ids)} messages never arrived")
            await asyncio.sleep(0.02)


class SmtpReceiver:
    def __init__(self, arrivals: Arrivals) -> None:
        self._arrivals = arrivals

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        raw = envelope.content if isinstance(envelope.content, bytes) else (envelope.content or "").encode()
        head = raw.split(b"\r\n\r\n", 1)[0]
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                self._arrivals.note(line.split(b":", 1)[1].strip().strip(b"<>").split(b"@")[0].decode())
        return "250 2.0.0 Ok: queued"


def webhook_server(arrivals: Arrivals) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            arrivals.note(self.headers.get("webhook-id", ""))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


@dataclass
class CpuUse:
    """CPU seconds spent over a phase: `notify` is the bench's main thread, `servers` its child processes."""

    notify: float
    servers: float

    @classmethod
    def now(cls) -> CpuUse:
        return cls(time.thread_time(), below_cpu(os.getpid()))

    def since(self, start: CpuUse) -> CpuUse:
        return CpuUse(self.notify - start.notify, self.servers - start.servers)

    def per_message(self, n: int) -> str:
        return f"notify {self.notify / n * 1000:.2f} ms, PostgreSQL + broker {self.servers / n * 1000:.2f} ms"


def request(i: int, channel: ChannelAddress) -> NotificationRequested:
    return NotificationRequested(
        notification_id=str(uuid.uuid4()), incident_id=str(uuid.uuid4()), reference=f"OSI-B{i:05d}"[-9:],
        school_id="school-a", school_name="Oakfield Primary School", incident_class=IncidentClass.ILLEGAL,
        urgency=Urgency.IMMEDIATE, level=1, generation=1,
        recipient=Recipient(role="dsl", name="Ms Patel", channels=[channel]),
        reminders=[Reminder(code="do_not_view_copy_share_delete", owner_role="dsl",
                            text="Do not view, copy, share or delete the imagery.")],
        reason="first notice",
    )


def requested_event(r: NotificationRequested) -> CloudEvent:
    return new_event(EventType.NOTIFICATION_REQUESTED, source="bench", subject=r.incident_id,
                     schoolid=r.school_id, data=r.model_dump(mode="json"))


async def _bounded(n: int, one: Callable[[int], Any]) -> float:
    """`n` calls of `one`, CONCURRENCY at a time; returns calls/s."""
    limit = asyncio.Semaphore(CONCURRENCY)

    async def guarded(i: int) -> None:
        async with limit:
            await one(i)

    start = time.perf_counter()
    await asyncio.gather(*(guarded(i) for i in range(n)))
    return n / (time.perf_counter() - start)


async def bare_smtp(port: int, n: int) -> float:
    """Bare aiosmtplib, each of the CONCURRENCY senders on a connection it keeps (as notify's pool does),
    the message built once: the SMTP exchange alone."""
    email = EmailMessage()
    email["From"], email["To"], email["Subject"] = "alerts@school.example", "dsl@school-a.example", "x"
    email.set_content("Incident OSI-B00001 at Oakfield Primary School\n" * 10)
    data = bytes(email)
    clients: list[aiosmtplib.SMTP] = []

    async def one(i: int) -> None:
        client = clients.pop() if clients else aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
        if not client.is_connected:
            await client.connect()
        await client.sendmail("alerts@school.example", [f"dsl{i % 20}@school-a.example"],
                              f"Message-ID: <bare-{i}@bench.example>\n".encode() + data)
        clients.append(client)

    try:
        return await _bounded(n, one)
    finally:
        for client in clients:
            await client.quit()


async def bare_webhook(url: str, n: int) -> float:
    body = {"type": "incident.notification", "data": {"reference": "OSI-B00001", "padding": "x" * 600}}
    async with httpx.AsyncClient(timeout=30) as client:  # notify's webhook channel keeps one client too

        async def one(i: int) -> None:
            (await client.post(url, json=body, headers={"webhook-id": f"bare-{i}"})).raise_for_status()

        return await _bounded(n, one)


async def _produce_burst(producer: AIOKafkaProducer, topic: str, events: list[CloudEvent]) -> dict[str, float]:
    sent = {}
    for e in events:
        sent[e.data["notification_id"]] = time.perf_counter()
        await producer.send(topic, e.to_bytes(), key=e.key)
    await producer.flush()
    return sent


async def _produce_steady(producer: AIOKafkaProducer, topic: str, events: list[CloudEvent],
                          rate: float) -> dict[str, float]:
    scheduled = {}
    start = time.perf_counter() + 0.05
    for i, e in enumerate(events):
        at = start + i / rate
        if (delay := at - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        scheduled[e.data["notification_id"]] = at
        await producer.send(topic, e.to_bytes(), key=e.key)
    await producer.flush()
    return scheduled


def _figures(sent: dict[str, float], arrivals: Arrivals) -> Figures:
    start, end = min(sent.values()), max(arrivals.at[i] for i in sent)
    lat = sorted(arrivals.at[i] - t for i, t in sent.items())
    return Figures(len(sent) / (end - start), pct(lat, 0.5), pct(lat, 0.99), len(sent))


async def through_notify(admin_dsn: str, bootstrap: str, arrivals: Arrivals, smtp_port: int,
                         channel_for: Callable[[int], ChannelAddress], n: int, rate: float,
                         seconds: float) -> tuple[Figures, Figures, CpuUse]:
    """(burst of n, steady rate, CPU over the burst) through a fresh notify service on its own schema and
    topics."""
    from notify.config import NotifySettings
    from notify.main import build

    name = "nb" + uuid.uuid4().hex[:8]
    settings = NotifySettings(
        database_url=admin_dsn, db_schema=f"{name}_notify", kafka_bootstrap_servers=bootstrap,
        topic_prefix=f"{name}.", smtp_host="127.0.0.1", smtp_port=smtp_port, token_secret=TOKEN_SECRET,
        public_base_url="https://safety.school-a.example", webhook_secret=WEBHOOK_SECRET,
        webhook_allow_plain_http=True,
    )
    service = build(settings)
    await service.runtime.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    topic = f"{name}.{Topic.NOTIFICATIONS_REQUESTED.value}"
    try:
        warm = requested_event(request(0, channel_for(0)))  # the consumer has joined before any clock starts
        await _produce_burst(producer, topic, [warm])
        await arrivals.wait_for([warm.data["notification_id"]], timeout=120)
        events = [requested_event(request(i, channel_for(i))) for i in range(n)]
        cpu = CpuUse.now()
        sent = await _produce_burst(producer, topic, events)
        await arrivals.wait_for(list(sent), timeout=600)
        burst, cpu = _figures(sent, arrivals), CpuUse.now().since(cpu)
        events = [requested_event(request(i, channel_for(i))) for i in range(int(rate * seconds))]
        sent = await _produce_steady(producer, topic, events, rate)
        await arrivals.wait_for(list(sent), timeout=600)
        return burst, _figures(sent, arrivals), cpu
    finally:
        await producer.stop()
        await service.runtime.stop()


async def rows(admin_dsn: str, bootstrap: str, n: int = 2000, rate: float = 100.0,
               seconds: float = 10.0) -> list[tuple[str, str, str]]:
    arrivals = Arrivals()
    smtp_port = free_port()
    controller = Controller(SmtpReceiver(arrivals), hostname="127.0.0.1", port=smtp_port)
    controller.start()
    hooks = webhook_server(arrivals)
    hook_url = f"http://127.0.0.1:{hooks.server_address[1]}/hooks/safeguarding"
    try:
        bare_mail = await bare_smtp(smtp_port, n)
        bare_hook = await bare_webhook(hook_url, n)

        def email(i: int) -> ChannelAddress:
            return ChannelAddress(kind=ChannelKind.EMAIL, address=f"dsl{i % 20}@school-a.example")

        def webhook(i: int) -> ChannelAddress:
            return ChannelAddress(kind=ChannelKind.WEBHOOK, address=hook_url)

        mail, mail_steady, mail_cpu = await through_notify(admin_dsn, bootstrap, arrivals, smtp_port, email, n,
                                                           rate, seconds)
        hook, hook_steady, hook_cpu = await through_notify(admin_dsn, bootstrap, arrivals, smtp_port, webhook, n,
                                                           rate, seconds)
    finally:
        controller.stop()
        hooks.shutdown()
        hooks.server_close()
    steady = f"requested -> received at a steady {rate:,.0f}/s for {seconds:.0f} s"
    return [
        ("notify", f"bare aiosmtplib sends on kept connections, {CONCURRENCY} in flight (ceiling)",
         f"{bare_mail:,.0f} messages/s"),
        ("notify", f"email delivered to the SMTP server, {n:,} requested at once", f"{mail.per_s:,.0f} messages/s"),
        ("notify", "email / ceiling", f"{mail.per_s / bare_mail:.0%}"),
        ("notify", "email: CPU per delivered message in the burst", mail_cpu.per_message(n)),
        ("notify", f"email {steady}", mail_steady.latency()),
        ("notify", f"bare httpx POSTs, {CONCURRENCY} in flight (ceiling)", f"{bare_hook:,.0f} messages/s"),
        ("notify", f"webhooks delivered to the receiver, {n:,} requested at once", f"{hook.per_s:,.0f} messages/s"),
        ("notify", "webhook / ceiling", f"{hook.per_s / bare_hook:.0%}"),
        ("notify", "webhook: CPU per delivered message in the burst", hook_cpu.per_message(n)),
        ("notify", f"webhook {steady}", hook_steady.latency()),
    ]


async def _alone() -> list[tuple[str, str, str]]:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "_lib"))
    from support.stack import start_embedded

    stack = start_embedded()
    try:
        return await rows(stack.admin_dsn, stack.bootstrap, int(os.environ.get("BENCH_NOTIFY_MESSAGES", "2000")),
                          float(os.environ.get("BENCH_NOTIFY_RATE", "100")),
                          float(os.environ.get("BENCH_STEADY_SECONDS", "10")))
    finally:
        stack.stop()


if __name__ == "__main__":
    before = load_average()
    table = asyncio.run(_alone())
    print(f"load average before: {before}; after: {load_average()}")
    for _, measure, result in table:
        print(f"{measure:<75} {result}")
