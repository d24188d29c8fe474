"""Nothing is lost when workers die: SIGKILLed children and main processes, long tasks, poison messages."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
import redis

from meetingtasks import dispatch, dispatch_batch
from meetingtasks.store.platform import Platform
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

# Slow tier: fault injection (kills, restarts, outages, refused writes) waits out real timeouts.
pytestmark = pytest.mark.slow


def tags(r: redis.Redis, kind: str) -> list[str]:
    return [x.decode().split("|")[0] for x in r.lrange(f"test:{kind}", 0, -1)]


def test_sigkill_of_a_prefork_child_mid_task_loses_nothing(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given a prefork worker running 20 half-second tasks
    worker = start_worker("ai", "--pool", "prefork", "--concurrency", "2")
    dispatch_batch([("t_sleep", {"tag": f"job-{i}", "seconds": 0.5}) for i in range(20)])
    wait_for(lambda: len(tags(r, "started")) >= 3, message="tasks to start")
    # When a pool child is SIGKILLed in the middle of a task
    victims = worker.children()
    assert victims, "prefork worker has no children"
    os.kill(victims[0], signal.SIGKILL)
    # Then every task still finishes (counts in = counts out)
    wait_for(lambda: len(set(tags(r, "finished"))) == 20, timeout_s=60, message="all 20 tasks to finish")
    assert sorted(set(tags(r, "finished"))) == sorted(f"job-{i}" for i in range(20))
    # The last ack follows the handler's "finished" mark by a moment (the parent acks after the child reports).
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0, message="every message to be acked")
    assert platform.dead_letters.count(r, "ai") == 0


def test_sigkill_of_the_whole_worker_is_recovered_by_another_within_the_visibility_timeout(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given a worker in the middle of a 2-second task (visibility timeout 3 s, restore sweep 0.5 s)
    doomed = start_worker("ai", "--pool", "threads", "--concurrency", "1")
    handle = dispatch("t_sleep", {"tag": "survivor", "seconds": 2})
    wait_for(lambda: tags(r, "started"), message="the task to start")
    # When the worker's whole process group is SIGKILLed and another worker is running
    start_worker("ai", "--pool", "threads", "--concurrency", "1")
    killed_at = time.monotonic()
    doomed.kill(signal.SIGKILL)
    # Then the task runs again on the survivor and completes, within vt (its lease's start rounded up to a whole
    # second: up to 1 s more) + restore interval + the idle survivor's poll (a restored message sends no wake
    # token: up to 1 s) + run time
    assert handle.wait(timeout=30) == "survivor"
    assert time.monotonic() - killed_at < 3 + 1 + 0.5 + 1 + 2 + 3  # (+3 s of slack for a loaded machine)
    assert tags(r, "finished") == ["survivor"]
    assert r.hlen(platform.keys.unacked("ai")) == 0


def test_a_task_running_four_times_the_visibility_timeout_runs_exactly_once(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given two workers on the same queues and a visibility timeout of 3 s (leases renewed every 1 s)
    start_worker("ai", "--pool", "threads", "--concurrency", "1")
    start_worker("ai", "--pool", "threads", "--concurrency", "1")
    # When a task runs for 12 s
    handle = dispatch("t_sleep", {"tag": "long", "seconds": 12})
    # Then it completes once and is never redelivered to the idle worker
    assert handle.wait(timeout=40) == "long"
    assert tags(r, "started") == ["long"]
    assert [s.value for s, _, _ in handle.info().history] == ["QUEUED", "STARTED", "SUCCEEDED"]


def test_a_poison_message_that_kills_its_worker_is_dead_lettered_after_max_deliveries(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given a prefork worker allowing 3 deliveries per task
    worker = start_worker("ai", "--pool", "prefork", "--concurrency", "1",
                          env_overrides={"MEETINGTASKS_MAX_DELIVERIES": "3"})
    # When a task kills its process every time it runs
    handle = dispatch("t_crash", {"tag": "poison"})
    # Then after three deliveries it is dead-lettered instead of run a fourth time
    letter = wait_for(lambda: platform.dead_letters.list(r, "ai"), timeout_s=60, message="the poison dead letter")
    (letter,) = letter  # type: ignore[misc]
    assert letter.reason == "PoisonMessage" and letter.task_id == handle.id
    assert "delivered 4 times" in letter.error
    assert tags(r, "attempts") == ["poison"] * 3
    assert handle.status() == "DEAD_LETTERED"
    # and the worker keeps consuming
    assert dispatch("t_echo", {"tag": "after"}).wait(timeout=20) == {"tag": "after"}
    assert worker.proc.poll() is None
