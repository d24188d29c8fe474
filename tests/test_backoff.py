"""Retry policy math, without Redis."""

from __future__ import annotations

import random

import pytest

from meetingtasks.core.backoff import RetryPolicy, backoff_ceiling_s, backoff_delay_s, retries_left


def test_ceiling_doubles_until_the_cap() -> None:
    assert [backoff_ceiling_s(n, 1.0, 10.0) for n in range(6)] == [1, 2, 4, 8, 10, 10]


def test_full_jitter_stays_within_zero_and_the_ceiling() -> None:
    rng = random.Random(7)
    policy = RetryPolicy(max_retries=5, base_s=0.5, max_s=30)
    for retry in range(8):
        ceiling = backoff_ceiling_s(retry, 0.5, 30)
        draws = [backoff_delay_s(retry, policy, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in draws)
        assert max(draws) > ceiling * 0.8, "full jitter should use the whole range"


def test_without_jitter_the_wait_is_the_ceiling() -> None:
    assert backoff_delay_s(3, RetryPolicy(base_s=2, max_s=100, jitter=False)) == 16


def test_huge_retry_numbers_do_not_overflow() -> None:
    assert backoff_ceiling_s(10_000, 1.0, 60.0) == 60.0


def test_retries_left_counts_retries_not_runs() -> None:
    policy = RetryPolicy(max_retries=2)
    assert [retries_left(done, policy) for done in range(4)] == [True, True, False, False]


def test_negative_values_are_refused() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError, match="retry must be >= 0"):
        backoff_ceiling_s(-1, 1, 1)
