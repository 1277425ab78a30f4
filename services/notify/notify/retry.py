"""When to try a failed send again: exponential backoff with full jitter, capped, with a last attempt.

Full jitter (a uniform draw between zero and the exponential ceiling) spreads the retries of many
notifications that failed together, e.g. when the SMTP relay restarts, so they do not return in a wave.
A provider's Retry-After is a floor; one that asks for longer than `max_retry_after` makes us give up on
this channel so the escalation can fall back to the next one rather than wait.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

Random = Callable[[], float]  # uniform in [0, 1), like random.random


@dataclass(frozen=True)
class RetryAt:
    delay: timedelta
    at: datetime


@dataclass(frozen=True)
class GiveUp:
    reason: str


@dataclass(frozen=True)
class BackoffPolicy:
    base_seconds: float = 2.0
    factor: float = 2.0
    cap_seconds: float = 300.0
    max_attempts: int = 6
    max_retry_after_seconds: float = 900.0

    def __post_init__(self) -> None:
        if self.base_seconds <= 0 or self.factor < 1 or self.cap_seconds < self.base_seconds:
            raise ValueError("backoff needs base > 0, factor >= 1 and cap >= base")
        if self.max_attempts < 1:
            raise ValueError("at least one attempt is needed")

    def ceiling(self, attempts_made: int) -> float:
        """The most we wait after `attempts_made` failed attempts (1 after the first failure)."""
        exponent = max(0, attempts_made - 1)
        try:
            grown = self.base_seconds * self.factor**exponent
        except OverflowError:  # a very late attempt; the cap applies anyway
            return self.cap_seconds
        return min(self.cap_seconds, grown)

    def after_failure(
        self,
        attempts_made: int,
        *,
        now: datetime,
        retry_after: float | None = None,
        rand: Random = random.random,
    ) -> RetryAt | GiveUp:
        """What to do after the `attempts_made`-th attempt failed with a retryable error."""
        if attempts_made < 1:
            raise ValueError("attempts_made counts the attempts already made, starting at 1")
        if attempts_made >= self.max_attempts:
            return GiveUp(f"gave up after {attempts_made} attempts")
        if retry_after is not None and retry_after > self.max_retry_after_seconds:
            return GiveUp(f"provider asked to wait {retry_after:.0f}s, over {self.max_retry_after_seconds:.0f}s")
        draw = min(max(rand(), 0.0), 1.0)
        seconds = draw * self.ceiling(attempts_made)
        if retry_after is not None:
            seconds = max(seconds, retry_after)
        delay = timedelta(seconds=seconds)
        return RetryAt(delay=delay, at=now + delay)
