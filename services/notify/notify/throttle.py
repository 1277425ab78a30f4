"""Which pending messages go now, which are grouped into one digest, and which wait until when.

A burst (a filtering system reporting twenty accidental visits in a minute) should reach the DSL as one
message, not twenty; but nothing about illegal content, and nothing where a child is at immediate risk,
ever waits. The first message to a quiet address goes at once; what follows within the window is held
and sent together when the window closes. No message waits longer than one window.

Pure: the caller supplies the time, the pending messages and when each address was last sent to.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from common.contracts import ChannelAddress, ChannelKind, IncidentClass, NotificationRequested, Urgency

AddressKey = tuple[ChannelKind, str]
_URGENCY_RANK = {Urgency.IMMEDIATE: 0, Urgency.HIGH: 1, Urgency.NORMAL: 2, Urgency.LOW: 3}


@dataclass(frozen=True)
class Pending:
    request: NotificationRequested
    channel: ChannelAddress
    received_at: datetime


@dataclass(frozen=True)
class Batch:
    """Send these together to one address: one item is an ordinary message, more is a digest."""

    channel: ChannelAddress
    items: tuple[Pending, ...]

    @property
    def is_digest(self) -> bool:
        return len(self.items) > 1


@dataclass(frozen=True)
class Held:
    item: Pending
    until: datetime


@dataclass(frozen=True)
class ThrottlePlan:
    send_now: tuple[Batch, ...]
    held: tuple[Held, ...]

    @property
    def next_wake(self) -> datetime | None:
        """When to plan again for the held messages."""
        return min((h.until for h in self.held), default=None)


def _default_max_batch() -> Mapping[ChannelKind, int]:
    # A burst of routine notices to one phone becomes one SMS a window, not one each (issue 5: not "a hundred SMS
    # to one phone in a minute"). Three fragments hold about two one-time links: the digest carries those and says
    # how many more there are, each in full in the recipient's email; one nobody acknowledges escalates as usual.
    return {ChannelKind.EMAIL: 20, ChannelKind.WEBHOOK: 20, ChannelKind.SMS: 20}


@dataclass(frozen=True)
class ThrottlePolicy:
    window: timedelta = timedelta(minutes=2)
    max_batch: Mapping[ChannelKind, int] = field(default_factory=_default_max_batch)
    never_hold_classes: frozenset[IncidentClass] = frozenset({IncidentClass.ILLEGAL})
    never_hold_urgencies: frozenset[Urgency] = frozenset({Urgency.IMMEDIATE})

    def never_held(self, request: NotificationRequested) -> bool:
        return request.incident_class in self.never_hold_classes or request.urgency in self.never_hold_urgencies

    def batch_size(self, kind: ChannelKind) -> int:
        return max(1, self.max_batch.get(kind, 1))


def address_key(channel: ChannelAddress) -> AddressKey:
    """Two spellings of one address are one address: case for email, spacing and +44 for phones."""
    address = channel.address.strip()
    if channel.kind is ChannelKind.EMAIL:
        return channel.kind, address.casefold()
    if channel.kind is ChannelKind.SMS:
        digits = re.sub(r"[\s().-]", "", address)
        for prefix in ("+44", "0044"):
            if digits.startswith(prefix):
                digits = "0" + digits[len(prefix) :]
        return channel.kind, digits
    return channel.kind, address


def plan(
    now: datetime,
    pending: Iterable[Pending],
    *,
    policy: ThrottlePolicy | None = None,
    last_sent: Mapping[AddressKey, datetime] | None = None,
) -> ThrottlePlan:
    policy = policy or ThrottlePolicy()
    last_sent = last_sent or {}
    send_now: list[Batch] = []
    held: list[Held] = []
    for key, items in _by_address(pending).items():
        urgent = [p for p in items if policy.never_held(p.request)]
        routine = [p for p in items if not policy.never_held(p.request)]
        send_now += [Batch(p.channel, (p,)) for p in urgent]
        size = policy.batch_size(key[0])
        if size == 1:  # no grouping on this channel, so holding would only delay
            send_now += [Batch(p.channel, (p,)) for p in routine]
            continue
        release = _release_at(now, routine, last_sent.get(key), policy.window)
        if release is None:
            continue
        if now >= release:
            send_now += [Batch(routine[0].channel, tuple(routine[i : i + size])) for i in range(0, len(routine), size)]
        else:
            held += [Held(p, release) for p in routine]
    send_now.sort(key=_batch_order)
    held.sort(key=lambda h: (h.until, h.item.received_at))
    return ThrottlePlan(tuple(send_now), tuple(held))


def _by_address(pending: Iterable[Pending]) -> dict[AddressKey, list[Pending]]:
    """Group by address, oldest first, dropping a notification that is pending twice on the same address."""
    groups: dict[AddressKey, list[Pending]] = {}
    seen: set[tuple[AddressKey, str]] = set()
    for p in sorted(pending, key=lambda p: p.received_at):
        key = address_key(p.channel)
        if (key, p.request.notification_id) in seen:
            continue
        seen.add((key, p.request.notification_id))
        groups.setdefault(key, []).append(p)
    return groups


def _release_at(now: datetime, routine: list[Pending], last: datetime | None, window: timedelta) -> datetime | None:
    """A quiet address gets its messages now; a busy one when its window closes, or when the oldest
    message has waited a full window, whichever is first."""
    if not routine:
        return None
    if last is None or now >= last + window:
        return now
    return min(last + window, routine[0].received_at + window)


def _batch_order(batch: Batch) -> tuple[int, int, datetime]:
    first_urgent = min(_URGENCY_RANK[p.request.urgency] for p in batch.items)
    illegal = 0 if any(p.request.incident_class is IncidentClass.ILLEGAL for p in batch.items) else 1
    return illegal, first_urgent, min(p.received_at for p in batch.items)
