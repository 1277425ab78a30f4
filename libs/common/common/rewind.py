"""Noticing, as a consumer, that a partition's log began again under it, and reading it again from the start.

A broker can forget what it held: the embedded one keeps everything in memory, and a Kafka topic can be
deleted and re-created. Its logs then begin again at offset 0, but a consumer's offsets from the old log can
outlive them: in the consumer's memory (Tansu takes heartbeats and commits from members of a group it never
saw, so nothing makes it rejoin), or committed onto the new broker by a batch fetched before the restart.
Tansu answers a fetch beyond the end of a log with nothing rather than OffsetOutOfRange, so the reset policy
never fires, and every event the new log holds below that offset would be skipped for good (make test's
chaos run: reports never triaged, events missing from the audit log).

Two signs, either enough:
- after every poll, a position past the log's end (the high watermark that comes with every fetch answer,
  exact on Tansu, unlike ListOffsets): seen at once, but only while the new log is still the shorter;
- every few seconds, the record last handled on each partition is no longer at its offset (read back as the
  producers' broker watch reads theirs, `common.kafka.records_at`): seen even once the new log has grown past
  the old position.

The partition is then read again from its beginning and the start committed (or every rejoin of the group
would bring the stale committed offset back). The inbox absorbs whatever is read twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from common.aio import within
from common.kafka import records_at

log = structlog.get_logger(__name__)

READ_BACK_TIMEOUT_SECONDS = 15.0


def _partition_states(consumer: AIOKafkaConsumer) -> dict[TopicPartition, Any]:
    """aiokafka's state (position, high watermark) of each assigned partition. Private: positions have no public
    accessor that does not wait, and this is read after every poll."""
    subscription = consumer._subscription.subscription  # noqa: SLF001
    if subscription is None or subscription.assignment is None:
        return {}
    assignment = subscription.assignment
    return {tp: assignment.state_value(tp) for tp in assignment.tps}


class Rewinder:
    """One consumer group's watch on its partitions' logs; it outlives the Kafka consumers the runner restarts."""

    def __init__(self, bootstrap: str, group: str, read_back_seconds: float = 5.0) -> None:
        self._bootstrap = bootstrap
        self._group = group
        self._read_back_seconds = read_back_seconds
        self._last_handled: dict[TopicPartition, tuple[int, bytes | None]] = {}
        self._rewinds: dict[TopicPartition, int] = {}  # per partition, how many times it was rewound
        self._said: dict[TopicPartition, int] = {}  # the stale position last warned about, per partition
        self._reading_back: asyncio.Task[dict[TopicPartition, str]] | None = None
        self._read_back_due = 0.0
        self.rewound_total = 0

    def handled(self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]]) -> None:
        """Note each partition's last record of a batch that was handled and committed."""
        for tp, records in batch.items():
            self._last_handled[tp] = (records[-1].offset, records[-1].value)

    async def after_poll(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        """Rewind the partitions whose log began again; returns them."""
        states = _partition_states(consumer)
        reasons = {
            tp: f"position {state.position} is past the log's end ({state.highwater})"
            for tp, state in states.items()
            if state.highwater is not None and state.has_valid_position and state.position > state.highwater
        }
        reasons.update((tp, why) for tp, why in self._read_back_result().items() if tp in states and tp not in reasons)
        self._start_read_back()
        if reasons:
            await self._rewind(consumer, reasons, states)
        return sorted(reasons)

    async def stop(self) -> None:
        if self._reading_back is not None:
            self._reading_back.cancel()
            await asyncio.gather(self._reading_back, return_exceptions=True)
            self._reading_back = None

    def _start_read_back(self) -> None:
        loop = asyncio.get_running_loop()
        if self._reading_back is not None or not self._last_handled or loop.time() < self._read_back_due:
            return
        self._read_back_due = loop.time() + self._read_back_seconds
        self._reading_back = asyncio.create_task(self._read_back(dict(self._last_handled), dict(self._rewinds)))

    def _read_back_result(self) -> dict[TopicPartition, str]:
        task = self._reading_back
        if task is None or not task.done():
            return {}
        self._reading_back = None
        if task.cancelled() or task.exception() is not None:
            return {}  # the broker is away: the next read-back will tell
        return task.result()

    async def _read_back(
        self, last: dict[TopicPartition, tuple[int, bytes | None]], rewinds: dict[TopicPartition, int]
    ) -> dict[TopicPartition, str]:
        positions = {tp: offset for tp, (offset, _) in last.items()}
        held = await within(READ_BACK_TIMEOUT_SECONDS, records_at(self._bootstrap, positions))
        return {
            tp: f"the record last handled at offset {offset} is {'gone' if held.get(tp) is None else 'another'}"
            for tp, (offset, value) in last.items()
            # a partition rewound meanwhile was noted from the old log: it is being read again already
            if held.get(tp) != value and self._rewinds.get(tp, 0) == rewinds.get(tp, 0)
        }

    async def _rewind(
        self, consumer: AIOKafkaConsumer, reasons: dict[TopicPartition, str], states: dict[TopicPartition, Any]
    ) -> None:
        for tp, why in sorted(reasons.items()):
            position = states[tp].position if states[tp].has_valid_position else None
            # While the group settles after a restart the same stale offset can come back a few times
            # (rejoins fetch the committed one): one warning per partition and offset is enough.
            (log.debug if self._said.get(tp) == position else log.warning)(
                "consumer.log_began_again", group=self._group, topic=tp.topic, partition=tp.partition, reason=why,
            )
            self._said[tp] = position if position is not None else -1
            self._rewinds[tp] = self._rewinds.get(tp, 0) + 1
            self._last_handled.pop(tp, None)
        self.rewound_total += len(reasons)
        await consumer.seek_to_beginning(*reasons)  # waits (at most the request timeout) for the new positions
        now = _partition_states(consumer)
        starts = {tp: now[tp].position for tp in reasons if tp in now and now[tp].has_valid_position}
        if not starts:
            return
        try:
            await consumer.commit(starts)
        except KafkaError as exc:  # a rebalance under way: the partition's new owner starts from its commit
            log.warning("consumer.rewind_commit_failed", group=self._group, error=repr(exc))
