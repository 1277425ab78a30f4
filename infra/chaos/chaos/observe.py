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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from common.tokens import TokenError, verify_ack_token
from devstack.smtp_sink import message_paths

PIPELINE_SCHEMAS = ("intake", "triage", "notify")  # the services that publish events (audit only records)
RESCAN_MARGIN = timedelta(seconds=60)  # far longer than any transaction of the services
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
    """Everything seen so far. Keyed by what identifies a row, so reading a row again changes nothing."""

    # per schema: event id -> (topic, key = incident id)
    published: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    requested: dict[str, str] = field(default_factory=dict)  # notification id -> incident id
    audit_records: dict[tuple[str, int], str] = field(default_factory=dict)  # (school, seq) -> event id
    audit_schools: set[str] = field(default_factory=set)
    dead_letters: set[str] = field(default_factory=set)  # event ids of records from a .dlq topic
    deliveries: dict[str, Delivery] = field(default_factory=dict)  # Message-ID -> copies
    delivered: dict[str, str] = field(default_factory=dict)  # notification id -> Message-ID
    unreadable_messages: int = 0
    triaged: Counter[str] = field(default_factory=Counter)  # incident id -> incidents.triaged events
    audited: Counter[str] = field(default_factory=Counter)  # event id -> records in the audit log

    def recount(self) -> None:
        self.triaged = Counter(key for topic, key in self.published.get("triage", {}).values()
                               if topic == "incidents.triaged")
        self.audited = Counter(self.audit_records.values())


class Observer:
    def __init__(self, admin_dsn: str, mail_dir: Path, token_secret: str) -> None:
        self._dsn = admin_dsn
        self._mail = mail_dir
        self._secret = token_secret
        self._seen_files: set[Path] = set()
        self._since: datetime | None = None  # rows written from then on are read again (commit order)
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

    async def scan_database(self, *, everything: bool = False) -> None:
        """Read the rows written since the last scan began, less a margin: ids and positions are handed out
        before commit, so a row with a lower id can appear after a higher one was read. `everything`: all."""
        conn = await asyncpg.connect(self._dsn, timeout=5)
        try:
            began: datetime = await conn.fetchval("SELECT now()")
            since = None if everything or self._since is None else self._since - RESCAN_MARGIN
            for schema in PIPELINE_SCHEMAS:
                await self._scan_outbox(conn, schema, since)
            await self._scan_audit(conn, since)
            self._since = began if self._since is None or everything else max(self._since, began)
        finally:
            await conn.close(timeout=5)
        self.seen.recount()

    async def _scan_outbox(self, conn: asyncpg.Connection, schema: str, since: datetime | None) -> None:
        rows = await conn.fetch(
            f"SELECT event_id, topic, convert_from(key, 'UTF8') AS key, value FROM {schema}.outbox"  # noqa: S608
            " WHERE $1::timestamptz IS NULL OR created_at >= $1", since,
        )
        published = self.seen.published.setdefault(schema, {})
        for row in rows:
            published[row["event_id"]] = (row["topic"], row["key"])
            if schema == "triage" and row["topic"] == "notifications.requested":
                data = json.loads(bytes(row["value"]))["data"]
                self.seen.requested[data["notification_id"]] = row["key"]

    async def _scan_audit(self, conn: asyncpg.Connection, since: datetime | None) -> None:
        rows = await conn.fetch(
            "SELECT school_id, seq, event_id, topic FROM audit.audit_records"
            " WHERE $1::timestamptz IS NULL OR recorded_at >= $1", since,
        )
        for row in rows:
            self.seen.audit_records[(row["school_id"], row["seq"])] = row["event_id"]
            self.seen.audit_schools.add(row["school_id"])
            if row["topic"].endswith(".dlq"):
                self.seen.dead_letters.add(row["event_id"])

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
