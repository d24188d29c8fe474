"""Retry policy math: pure functions, no Redis, seconds everywhere."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to wait before retrying a failed task.

    ``max_retries`` counts retries, not runs: 3 means at most 4 runs. Waits grow as
    ``base_s * 2**retry`` capped at ``max_s``; with ``jitter`` the wait is drawn uniformly from
    ``[0, that]`` ("full jitter", which spreads a burst of failures best).
    """

    max_retries: int = 3
    base_s: float = 1.0
    max_s: float = 300.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.base_s < 0 or self.max_s < 0:
            raise ValueError("retry backoff base_s and max_s must be >= 0")


def backoff_ceiling_s(retry: int, base_s: float, max_s: float) -> float:
    """The un-jittered wait before retry number ``retry`` (0 for the first retry)."""
    if retry < 0:
        raise ValueError(f"retry must be >= 0, got {retry}")
    # 2**retry overflows float for absurd retry counts; the cap makes large exponents moot.
    exponent = min(retry, 62)
    return float(min(max_s, base_s * (2**exponent)))


def backoff_delay_s(retry: int, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    """The wait before retry number ``retry``, with full jitter when the policy asks for it."""
    ceiling = backoff_ceiling_s(retry, policy.base_s, policy.max_s)
    if not policy.jitter:
        return ceiling
    return (rng or random).uniform(0.0, ceiling)


def retries_left(retries_done: int, policy: RetryPolicy) -> bool:
    """Whether a task that has been retried ``retries_done`` times may be retried again."""
    return retries_done < policy.max_retries
