"""Publishing again what a broker may have lost: outbox rows marked unpublished, then relayed in id order.

The broker watch (`common.broker_watch`) marks a topic's rows after its safe point when it sees the
broker lost them; an operator marks a period with this command:

    python -m common.redrive --service triage --since 2026-11-23T09:00 [--topic incidents.triaged]

Rows keep their ids, so they go out again in their original order, ahead of anything newer. Consumers'
inboxes absorb the repeats: re-driving what was already consumed changes nothing downstream.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from common.db import Connection, open_database
from common.kafka import Publisher
from common.outbox import OutboxRelay, wake_relay
from common.settings import ServiceSettings
from common.topics import TopicNames, all_topic_names

_MARK_AFTER_SAFE_POINTS = (
    'UPDATE outbox SET published_at = NULL, partition = NULL, "offset" = NULL, published_pass = NULL, '
    "redriven = redriven + 1 "
    "WHERE published_at IS NOT NULL AND topic = ANY($1::text[]) AND id > coalesce("
    "(SELECT safe_id FROM outbox_safe_point s WHERE s.topic = outbox.topic), 0)"
)
_MARK_SINCE = (
    'UPDATE outbox SET published_at = NULL, partition = NULL, "offset" = NULL, published_pass = NULL, '
    "redriven = redriven + 1 "
    "WHERE published_at IS NOT NULL AND created_at >= $1 AND ($2::text[] IS NULL OR topic = ANY($2::text[])) "
    "RETURNING id"
)


async def mark_after_safe_points(conn: Connection, topics: Sequence[str]) -> int:
    """Mark every published row of `topics` after its topic's safe point; returns how many."""
    status = await conn.execute(_MARK_AFTER_SAFE_POINTS, list(topics))
    await wake_relay(conn)
    return int(status.split()[-1])


async def mark_since(conn: Connection, since: datetime, topics: Sequence[str] | None = None) -> list[int]:
    """Mark every published row created at or after `since` (of `topics`, if given); returns their ids."""
    rows = await conn.fetch(_MARK_SINCE, since, list(topics) if topics else None)
    await wake_relay(conn)
    return sorted(r["id"] for r in rows)


@dataclass
class RedriveSummary:
    marked: int
    by_topic: dict[str, int]
    seconds: float

    def __str__(self) -> str:
        if not self.marked:
            return "nothing to re-drive: no published event in that period"
        topics = ", ".join(f"{t}: {n:,}" for t, n in sorted(self.by_topic.items()))
        return f"re-drove {self.marked:,} events in {self.seconds:.1f} s ({topics})"


class ProgressBar:
    """One line on stderr, redrawn in place on a terminal; a line per quarter otherwise."""

    def __init__(self, total: int, width: int = 30) -> None:
        self._total = max(total, 1)
        self._width = width
        self._tty = sys.stderr.isatty()
        self._last_quarter = -1

    def show(self, done: int) -> None:
        filled = self._width * done // self._total
        line = f"re-driving [{'#' * filled}{'.' * (self._width - filled)}] {done:,}/{self._total:,}"
        if self._tty:
            print("\r" + line, end="" if done < self._total else "\n", file=sys.stderr, flush=True)
        elif (quarter := 4 * done // self._total) != self._last_quarter:
            self._last_quarter = quarter
            print(line, file=sys.stderr, flush=True)


async def redrive(
    settings: ServiceSettings, since: datetime, topics: Sequence[str] | None, *, give_up_after: float = 600.0
) -> RedriveSummary:
    """Mark the period's rows and publish them (with the service's own relay, if it is running, taking turns)."""
    started = time.monotonic()
    pool = await open_database(settings, [], max_size=2)
    names = TopicNames(settings.topic_prefix)
    publisher = Publisher(settings.kafka_bootstrap_servers, names.all(), settings.topic_partitions)
    relay = OutboxRelay(pool, publisher, names, schema=settings.schema_name)
    try:
        async with pool.acquire() as conn, conn.transaction():
            ids = await mark_since(conn, since, topics)
            by_topic = {
                r["topic"]: r["n"]
                for r in await conn.fetch(
                    "SELECT topic, count(*) AS n FROM outbox WHERE id = ANY($1::bigint[]) GROUP BY topic", ids
                )
            }
        bar = ProgressBar(len(ids))
        bar.show(0)
        deadline = time.monotonic() + give_up_after
        remaining = len(ids)
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{remaining:,} of {len(ids):,} events still unpublished after {give_up_after:.0f} s"
                )
            if not await relay.publish_pending():  # the service's relay holds the lock: it publishes them
                await asyncio.sleep(0.2)
            async with pool.acquire() as conn:
                remaining = int(await conn.fetchval(
                    "SELECT count(*) FROM outbox WHERE id = ANY($1::bigint[]) AND published_at IS NULL", ids
                ))
            bar.show(len(ids) - remaining)
        return RedriveSummary(len(ids), by_topic, time.monotonic() - started)
    finally:
        await publisher.close()
        await pool.close()


def _parse_time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: use ISO 8601, e.g. 2026-11-23T09:00 or 2026-11-23T09:00+00:00"
        ) from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _parse_topic(text: str) -> str:
    if text not in all_topic_names():
        raise argparse.ArgumentTypeError(f"unknown topic {text!r}: one of {', '.join(all_topic_names())}")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.redrive",
        description="Publish again, from a service's outbox, every retained event created since a time. "
        "Consumers ignore the repeats. Uses the service's settings from the environment "
        "(DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, TOPIC_PREFIX).",
    )
    parser.add_argument("--service", required=True, help="whose outbox: intake, triage, notify or audit")
    parser.add_argument("--since", required=True, type=_parse_time, help="ISO 8601 time (UTC if no offset)")
    parser.add_argument("--topic", action="append", type=_parse_topic, help="only this logical topic (repeatable)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    args = parser.parse_args(argv)
    settings = ServiceSettings(service_name=args.service)
    try:
        summary = asyncio.run(redrive(settings, args.since, args.topic, give_up_after=args.timeout))
    except (OSError, TimeoutError) as exc:
        print(f"redrive failed: {exc}", file=sys.stderr)
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
