"""What the system did, read from the outside: the SMTP sink's message files and, over an administrative
database connection, the services' outboxes (what each published) and the audit log (what it recorded).

Reads are incremental (new files, rows past the last id seen), so they can be repeated every second while
the run goes on, and they simply fail (to be tried again) while PostgreSQL is down.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from common.tokens import TokenError, verify_ack_token
from devstack.smtp_sink import message_paths

PIPELINE_SCHEMAS = ("intake", "triage", "notify")  # the services that publish events (audit only records)
_ACK_LINK = re.compile(r"/ack/([A-Za-z0-9_.~=-]+)")


def received_at(path: Path) -> float:
    """The sink names each file after its UTC time of receipt: `20261123T101500.123456Z-<id>.eml`."""
    stamp = path.name.split("-", 1)[0]
    return datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC).timestamp()


@dataclass
class Delivery:
    message_id: str
    received: list[float] = field(default_factory=list)  # wall times of each copy


@dataclass
class Observed:
    """Everything seen so far."""

    # per schema: event id -> (topic, key = incident id)
    published: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    triaged: Counter[str] = field(default_factory=Counter)  # incident id -> incidents.triaged events
    requested: dict[str, str] = field(default_factory=dict)  # notification id -> incident id
    audited: Counter[str] = field(default_factory=Counter)  # event id -> records in the audit log
    audit_schools: set[str] = field(default_factory=set)
    dead_letters: int = 0
    deliveries: dict[str, Delivery] = field(default_factory=dict)  # Message-ID -> copies
    delivered: dict[str, str] = field(default_factory=dict)  # notification id -> Message-ID
    unreadable_messages: int = 0


class Observer:
    def __init__(self, admin_dsn: str, mail_dir: Path, token_secret: str) -> None:
        self._dsn = admin_dsn
        self._mail = mail_dir
        self._secret = token_secret
        self._seen_files: set[Path] = set()
        self._last_id: dict[str, int] = {}
        self.seen = Observed()
        self.last_error = ""

    # ---------------------------------------------------------------- mail

    def scan_mail(self) -> None:
        for path in message_paths(self._mail):
            if path in self._seen_files:
                continue
            self._seen_files.add(path)
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            message_id = str(message.get("Message-ID", "")).strip().strip("<>").split("@", 1)[0]
            body = message.get_body(preferencelist=("plain",))
            text = body.get_content() if body is not None else ""
            ids = set()
            for token in _ACK_LINK.findall(text):
                try:
                    ids.add(verify_ack_token(token, self._secret).notification_id)
                except TokenError:
                    self.seen.unreadable_messages += 1
            if not message_id or not ids:
                self.seen.unreadable_messages += 1
                continue
            self.seen.deliveries.setdefault(message_id, Delivery(message_id)).received.append(received_at(path))
            for notification_id in ids:
                self.seen.delivered.setdefault(notification_id, message_id)

    # ---------------------------------------------------------------- database

    async def scan_database(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=5)
        try:
            for schema in PIPELINE_SCHEMAS:
                await self._scan_outbox(conn, schema)
            await self._scan_audit(conn)
        finally:
            await conn.close(timeout=5)

    async def _scan_outbox(self, conn: asyncpg.Connection, schema: str) -> None:
        key = f"outbox:{schema}"
        rows = await conn.fetch(
            f"SELECT id, event_id, topic, convert_from(key, 'UTF8') AS key, value FROM {schema}.outbox"  # noqa: S608
            " WHERE id > $1 ORDER BY id", self._last_id.get(key, 0),
        )
        published = self.seen.published.setdefault(schema, {})
        for row in rows:
            published[row["event_id"]] = (row["topic"], row["key"])
            if schema == "triage" and row["topic"] == "incidents.triaged":
                self.seen.triaged[row["key"]] += 1
            elif schema == "triage" and row["topic"] == "notifications.requested":
                data = json.loads(bytes(row["value"]))["data"]
                self.seen.requested[data["notification_id"]] = row["key"]
            self._last_id[key] = row["id"]

    async def _scan_audit(self, conn: asyncpg.Connection) -> None:
        rows = await conn.fetch(
            "SELECT pos, event_id, topic, school_id FROM audit.audit_records WHERE pos > $1 ORDER BY pos",
            self._last_id.get("audit", 0),
        )
        for row in rows:
            self.seen.audited[row["event_id"]] += 1
            self.seen.audit_schools.add(row["school_id"])
            if row["topic"].endswith(".dlq"):
                self.seen.dead_letters += 1
            self._last_id["audit"] = row["pos"]

    # ---------------------------------------------------------------- questions

    def outstanding(self, incidents: set[str]) -> dict[str, int]:
        """For these accepted reports: how many are not triaged yet, how many of their notifications are not
        in the sink, and how many of their events are not in the audit log. All 0: caught up."""
        untriaged = sum(1 for i in incidents if self.seen.triaged[i] == 0)
        undelivered = sum(1 for n, i in self.seen.requested.items() if i in incidents and n not in self.seen.delivered)
        unaudited = sum(
            1 for events in self.seen.published.values() for e, (_, key) in events.items()
            if key in incidents and self.seen.audited[e] == 0
        )
        return {"untriaged": untriaged, "undelivered": undelivered, "unaudited": unaudited}
