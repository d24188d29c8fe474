"""Retries go through the delayed set with growing waits; exhausted tasks are dead-lettered; replay works."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import redis

from meetingtasks import TaskFailed, dispatch
from meetingtasks.store.platform import Platform
from tests.support.workers import WorkerProcess

# Slow tier: every test runs worker subprocesses through kills, redeliveries or timeouts.
pytestmark = pytest.mark.slow


def attempt_times(r: redis.Redis, tag: str) -> list[float]:
    return [float(x.decode().split("|")[1]) for x in r.lrange("test:attempts", 0, -1) if x.decode().startswith(tag)]


def test_success_records_the_result(platform: Platform, start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker("ai")
    handle = dispatch("t_echo", {"tag": "hello"})
    assert handle.wait(timeout=20) == {"tag": "hello"}
    info = handle.info()
    assert [s.value for s, _, _ in info.history] == ["QUEUED", "STARTED", "SUCCEEDED"]


def test_fails_twice_then_succeeds_on_attempt_three_with_growing_delays(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker("ai")
    handle = dispatch("t_flaky", {"tag": "flaky", "fail_times": 2})
    assert handle.wait(timeout=30) == "ok"
    times = attempt_times(r, "flaky")
    assert len(times) == 3
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # base 0.3 s, no jitter: waits of 0.3 s then 0.6 s (plus pump latency)
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6, gaps
    assert gaps[1] > gaps[0]
    statuses = [s.value for s, _, _ in handle.info().history]
    assert statuses.count("RETRYING") == 2 and statuses[-1] == "SUCCEEDED"
    assert handle.info().attempt == 3


def test_always_failing_task_is_dead_lettered_with_traceback_and_replay_runs_it_again(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker("ai")
    handle = dispatch("t_always_fails", {"tag": "doomed"}, priority="high")
    try:
        handle.wait(timeout=30)
        raise AssertionError("the task should have failed")
    except TaskFailed as exc:
        assert exc.status == "DEAD_LETTERED"
        assert "always fails" in (exc.error or "")
    assert len(attempt_times(r, "doomed")) == 3  # max_retries=2 -> three runs
    letter = platform.dead_letters.get(r, handle.id)
    assert letter.reason == "RuntimeError"
    assert "Traceback" in (letter.traceback or "") and "always fails: doomed" in (letter.traceback or "")
    assert (letter.task_type, letter.priority, letter.attempts) == ("t_always_fails", "high", 3)
    assert letter.payload == {"tag": "doomed", "seconds": 0.0, "fail_times": 0}

    r.set("test:heal:doomed", 1)
    result = platform.dead_letters.replay(r, handle.id)
    assert result.replayed and result.queue == "ai.high"
    assert handle.wait(timeout=20) == "healed"
    assert len(attempt_times(r, "doomed")) == 4
    assert platform.dead_letters.count(r, "ai") == 0


def test_permanent_error_fails_at_once(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker("ai")
    handle = dispatch("t_permanent", {"tag": "nope"})
    try:
        handle.wait(timeout=20)
        raise AssertionError("should fail")
    except TaskFailed as exc:
        assert exc.status == "FAILED" and exc.error == "refused: nope"
    assert len(attempt_times(r, "nope")) == 1
    assert platform.dead_letters.count(r, "ai") == 0


def test_a_redis_that_lost_its_script_cache_changes_nothing(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given a worker that has loaded its scripts
    start_worker("ai")
    assert dispatch("t_echo", {"tag": "warm"}).wait(timeout=20) == {"tag": "warm"}
    # When Redis forgets every script (as after a restart), then a task runs, retries and finishes
    r.script_flush()
    handle = dispatch("t_flaky", {"tag": "flushed", "fail_times": 1})
    # Then the worker reloads what it needs: each step is recorded once
    assert handle.wait(timeout=30) == "ok"
    statuses = [s.value for s, _, _ in handle.info().history]
    assert statuses == ["QUEUED", "STARTED", "RETRYING", "STARTED", "SUCCEEDED"], statuses
    assert len(attempt_times(r, "flushed")) == 2
