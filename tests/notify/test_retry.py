"""Backoff policy: exponential ceiling, full jitter, cap, last attempt, Retry-After floor (notify.retry)."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from notify.retry import BackoffPolicy, GiveUp, RetryAt

NOW = dt.datetime(2025, 3, 4, 9, 30, tzinfo=dt.UTC)
POLICY = BackoffPolicy(base_seconds=2, factor=2, cap_seconds=60, max_attempts=10, max_retry_after_seconds=600)


def test_the_ceiling_doubles_from_the_base_until_the_cap():
    assert [POLICY.ceiling(n) for n in range(1, 9)] == [2, 4, 8, 16, 32, 60, 60, 60]


@pytest.mark.parametrize("attempts", range(1, 10))
def test_full_jitter_spans_zero_to_the_ceiling(attempts):
    low = POLICY.after_failure(attempts, now=NOW, rand=lambda: 0.0)
    high = POLICY.after_failure(attempts, now=NOW, rand=lambda: 0.999999)
    assert isinstance(low, RetryAt) and isinstance(high, RetryAt)
    assert low.delay == dt.timedelta(0) and low.at == NOW
    ceiling = dt.timedelta(seconds=POLICY.ceiling(attempts))
    assert ceiling * 0.999 <= high.delay <= ceiling
    assert high.at == NOW + high.delay


def test_random_delays_stay_within_bounds():
    rng = random.Random(7)
    for attempts in range(1, 10):
        for _ in range(200):
            decision = POLICY.after_failure(attempts, now=NOW, rand=rng.random)
            assert isinstance(decision, RetryAt)
            assert dt.timedelta(0) <= decision.delay <= dt.timedelta(seconds=min(60, 2 * 2 ** (attempts - 1)))


def test_retry_after_is_a_floor_not_a_ceiling():
    floor = POLICY.after_failure(1, now=NOW, retry_after=45, rand=lambda: 0.5)
    assert isinstance(floor, RetryAt) and floor.delay == dt.timedelta(seconds=45)
    jitter_wins = POLICY.after_failure(6, now=NOW, retry_after=1, rand=lambda: 0.5)
    assert isinstance(jitter_wins, RetryAt) and jitter_wins.delay == dt.timedelta(seconds=30)


def test_the_last_attempt_gives_up_so_the_next_channel_can_be_tried():
    assert isinstance(POLICY.after_failure(9, now=NOW, rand=lambda: 0.5), RetryAt)
    decision = POLICY.after_failure(10, now=NOW, rand=lambda: 0.5)
    assert decision == GiveUp("gave up after 10 attempts")


def test_a_provider_asking_to_wait_too_long_means_fall_back_now():
    decision = POLICY.after_failure(1, now=NOW, retry_after=3600)
    assert isinstance(decision, GiveUp) and "3600" in decision.reason


def test_very_late_attempts_do_not_overflow():
    patient = BackoffPolicy(max_attempts=100_000)
    assert patient.ceiling(50_000) == patient.cap_seconds


def test_a_random_source_out_of_range_is_clamped():
    decision = POLICY.after_failure(2, now=NOW, rand=lambda: 7.0)
    assert isinstance(decision, RetryAt) and decision.delay == dt.timedelta(seconds=4)


@pytest.mark.parametrize(
    "kwargs", [{"base_seconds": 0}, {"factor": 0.5}, {"cap_seconds": 1, "base_seconds": 2}, {"max_attempts": 0}]
)
def test_nonsense_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        BackoffPolicy(**kwargs)


def test_attempts_count_from_one():
    with pytest.raises(ValueError):
        POLICY.after_failure(0, now=NOW)
