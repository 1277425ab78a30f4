"""The escalation chain frozen onto an incident, and the timer's state machine that walks it."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from common.contracts import Recipient


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EscalationLevel(_Frozen):
    """One level of a frozen chain: everyone here is told in parallel."""

    level: int = Field(ge=0)
    recipients: tuple[Recipient, ...] = Field(min_length=1)
    ack_timeout: timedelta

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(r.role for r in self.recipients)


class FrozenChain(_Frozen):
    """The levels, contacts and timeouts copied onto an incident: later policy edits never change it."""

    levels: tuple[EscalationLevel, ...] = Field(min_length=1)
    repeat_every: timedelta
    max_repeats: int | None = None
    policy_version: str

    @property
    def top(self) -> int:
        return len(self.levels) - 1

    def as_contract(self) -> list[dict[str, Any]]:
        """The `IncidentTriaged.chain` form: one dict per level; chain-wide settings on every level."""
        shared = _Shared(
            repeat_every=self.repeat_every, max_repeats=self.max_repeats, policy_version=self.policy_version
        ).model_dump(mode="json")
        return [{**level.model_dump(mode="json"), **shared} for level in self.levels]

    @classmethod
    def from_contract(cls, levels: list[dict[str, Any]]) -> FrozenChain:
        shared = _Shared.model_validate({k: levels[0][k] for k in _Shared.model_fields})
        parsed = [EscalationLevel.model_validate({k: d[k] for k in EscalationLevel.model_fields}) for d in levels]
        return cls(levels=tuple(parsed), **shared.model_dump())


class _Shared(_Frozen):
    repeat_every: timedelta
    max_repeats: int | None
    policy_version: str


class EscalationCursor(_Frozen):
    """Where an incident's escalation stands: stored beside the frozen chain (PostgreSQL, by the lead)."""

    level: int = Field(ge=0)
    repeat: int = Field(default=0, ge=0)
    next_due_at: datetime | None = Field(description="None: nothing more will be sent.")


class TimerOutcome(StrEnum):
    NOT_YET_DUE = "not_yet_due"
    ESCALATED = "escalated"
    REPEATED = "repeated"
    EXHAUSTED = "exhausted"


class TimerStep(_Frozen):
    """What a due timer does: the new cursor and whom to tell now (nobody unless escalated or repeated)."""

    outcome: TimerOutcome
    from_level: int
    cursor: EscalationCursor
    notify: tuple[Recipient, ...] = ()
    reason: str


def start_cursor(chain: FrozenChain, now: datetime, *, whole_chain_at_once: bool = False) -> EscalationCursor:
    """The cursor after the first notices: level 0, or the top when everyone was told at once."""
    level = chain.top if whole_chain_at_once else 0
    return EscalationCursor(level=level, repeat=0, next_due_at=now + chain.levels[level].ack_timeout)


def next_step(chain: FrozenChain, cursor: EscalationCursor, now: datetime) -> TimerStep:
    """Advance an unacknowledged escalation whose timer fired at `now` (the caller checks the fencing token)."""
    due = cursor.next_due_at
    if due is None:
        return TimerStep(outcome=TimerOutcome.EXHAUSTED, from_level=cursor.level, cursor=cursor, reason="done")
    if now < due:
        return TimerStep(outcome=TimerOutcome.NOT_YET_DUE, from_level=cursor.level, cursor=cursor, reason="not yet due")
    current = chain.levels[cursor.level]
    if cursor.level < chain.top:
        following = chain.levels[cursor.level + 1]
        return TimerStep(
            outcome=TimerOutcome.ESCALATED,
            from_level=cursor.level,
            cursor=EscalationCursor(level=following.level, repeat=0, next_due_at=now + following.ack_timeout),
            notify=following.recipients,
            reason=f"level {current.level} ({', '.join(current.roles)}) did not acknowledge in time",
        )
    if chain.max_repeats is not None and cursor.repeat >= chain.max_repeats:
        return TimerStep(
            outcome=TimerOutcome.EXHAUSTED,
            from_level=cursor.level,
            cursor=cursor.model_copy(update={"next_due_at": None}),
            reason=f"still unacknowledged after {cursor.repeat} repeats at the top of the chain",
        )
    return TimerStep(
        outcome=TimerOutcome.REPEATED,
        from_level=cursor.level,
        cursor=EscalationCursor(level=cursor.level, repeat=cursor.repeat + 1, next_due_at=now + chain.repeat_every),
        notify=current.recipients,
        reason=f"still unacknowledged at the top of the chain: reminder {cursor.repeat + 1}",
    )
