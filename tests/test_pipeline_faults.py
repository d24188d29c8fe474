"""Jobs waiting in a prefork child's pipe (meetingtasks.worker.pool, meetingtasks.worker.pacing) when the child dies,
the worker stops, a task is cancelled or a critical task arrives: each ends once, nothing stays leased."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable

import pytest
import redis

import tests.support.pipeline_tasks  # noqa: F401  (registers t_piped)
from meetingtasks.enqueue.dispatcher import Dispatcher, TaskHandle
from meetingtasks.store.cancel import cancel
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import TERMINAL, Status
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess, pool_stats

INCLUDE = {"MEETINGTASKS_INCLUDE": "tests.support.tasks,tests.support.pipeline_tasks",
           "MEETINGTASKS_SOLO_BATCH_MS": "20"}


def _warmed_worker(platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> Dispatcher:
    """A prefork worker of one process that has learnt t_piped is quick."""
    d = Dispatcher(platform)
    start_worker("ai", "--pool", "prefork", "--concurrency", "1", env_overrides=INCLUDE)
    _warm(d, r)
    return d


def _warm(d: Dispatcher, r: redis.Redis, n: int = 150) -> None:
    """The worker learns that t_piped is quick: from now on jobs are sent ahead to busy processes."""
    for i in range(n):
        d.dispatch("t_piped", {"tag": f"warm-{i}"})
    wait_for(lambda: r.llen("test:done") >= n, 60, message="the warm-up")


def _settled(platform: Platform, r: redis.Redis, handles: list[TaskHandle], quick: list[str], timeout_s: float = 60):
    def all_ended() -> bool:
        return all(h.status() in TERMINAL for h in handles)
    try:
        wait_for(all_ended, timeout_s, message="every task to end")
    finally:
        stuck = Counter(h.status() for h in handles)
        print("statuses:", stuck)
    done = Counter(x.decode() for x in r.lrange("test:done", 0, -1))
    twice = {t: c for t, c in done.items() if c > 1}
    missing = [t for t in quick if done[t] == 0]
    assert not twice, f"ran twice: {twice}"
    assert not missing, f"never ran: {missing}"
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0, 10, message="nothing left leased")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["exit", "hang"])
def test_a_pool_child_that_dies_with_jobs_in_its_pipe_loses_none_and_runs_none_twice(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess], mode: str) -> None:
    d = _warmed_worker(platform, r, start_worker)
    before = pool_stats(platform)["jobs-sent-ahead"]
    assert before > 0, "pipelining is on"
    tags = [f"a-{i}" for i in range(40)]
    handles = [d.dispatch("t_piped", {"tag": t}) for t in tags[:20]]
    bad = d.dispatch("t_piped", {"tag": "bad", "mode": mode})
    handles += [d.dispatch("t_piped", {"tag": t}) for t in tags[20:]]
    _settled(platform, r, [*handles, bad], tags)
    assert all(h.status() == Status.SUCCEEDED for h in handles)
    assert pool_stats(platform)["jobs-sent-ahead"] > before


@pytest.mark.slow
def test_a_child_recycled_after_max_tasks_per_child_hands_its_unread_jobs_on(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    d = Dispatcher(platform)
    start_worker("ai", "--pool", "prefork", "--concurrency", "1", "--max-tasks-per-child", "20",
                 env_overrides={**INCLUDE, "MEETINGTASKS_SOLO_BATCH_MS": "100"})
    tags = [f"m-{i}" for i in range(300)]
    handles = [d.dispatch("t_piped", {"tag": t}) for t in tags]
    _settled(platform, r, handles, tags, timeout_s=90)
    assert all(h.status() == Status.SUCCEEDED for h in handles)
    print("pool stats:", pool_stats(platform))


@pytest.mark.slow
def test_terminate_cancel_of_a_task_with_jobs_behind_it_in_its_pipe(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    d = _warmed_worker(platform, r, start_worker)
    long = d.dispatch("t_piped", {"tag": "long", "mode": "sleep", "seconds": 30})
    tags = [f"c-{i}" for i in range(10)]
    handles = [d.dispatch("t_piped", {"tag": t}) for t in tags]
    wait_for(lambda: long.status() == Status.STARTED, message="the long task to start")
    print("unacked while long runs:", r.hlen(platform.keys.unacked("ai")))
    outcome = cancel(platform, long.id, terminate=True)
    print("cancel:", outcome.describe())
    _settled(platform, r, [long, *handles], tags, timeout_s=30)
    assert long.status() == Status.CANCELLED
    assert all(h.status() == Status.SUCCEEDED for h in handles)


@pytest.mark.slow
def test_warm_shutdown_with_jobs_in_pipes_leaves_nothing_leased_and_loses_nothing(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    d = Dispatcher(platform)
    w = start_worker("ai", "--pool", "prefork", "--concurrency", "2", env_overrides=INCLUDE)
    _warm(d, r, 100)
    tags = [f"s-{i}" for i in range(600)]
    handles = [d.dispatch("t_piped", {"tag": t}) for t in tags]
    wait_for(lambda: r.llen("test:done") >= 100 + 50, 30, message="the drain to be under way")
    w.proc.send_signal(signal.SIGTERM)
    w.proc.wait(timeout=60)
    statuses = Counter(h.status() for h in handles)
    print("after the warm shutdown:", statuses, "unacked", r.hlen(platform.keys.unacked("ai")))
    leased = r.hlen(platform.keys.unacked("ai"))
    assert Status.STARTED not in statuses, statuses
    ran_by_the_first = Counter(x.decode() for x in r.lrange("test:done", 0, -1))
    start_worker("ai", "--pool", "prefork", "--concurrency", "2", env_overrides=INCLUDE)
    wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in handles), 60, message="every task to end")
    done = Counter(x.decode() for x in r.lrange("test:done", 0, -1))
    twice = sorted(t for t in tags if done[t] > 1)
    print("ran twice:", twice, "ran by the first worker:", [t for t in twice if ran_by_the_first[t]],
          "left leased at its exit:", leased)
    assert not twice, f"ran twice: {twice}"
    assert leased == 0, "nothing left leased once the stopped worker exited"


@pytest.mark.slow
def test_without_the_reserve_the_pool_holds_no_more_than_one_job_per_process(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    d = Dispatcher(platform)
    start_worker("ai", "--pool", "prefork", "--concurrency", "1",
                 env_overrides={**INCLUDE, "MEETINGTASKS_SOLO_BATCH_MS": "0"})
    tags = [f"z-{i}" for i in range(300)]
    handles = [d.dispatch("t_piped", {"tag": t}) for t in tags]
    most = 0
    def drained() -> bool:
        nonlocal most
        most = max(most, r.hlen(platform.keys.unacked("ai")))
        return r.llen("test:done") >= len(tags)
    wait_for(drained, 60, interval_s=0.002, message="the drain")
    _settled(platform, r, handles, tags)
    stats = pool_stats(platform)
    print("most leased at once:", most, "pool:", stats)
    assert most <= 2, most
    assert stats["most-jobs-per-process"] == 1, stats


@pytest.mark.slow
def test_a_task_cancelled_while_it_waits_in_a_pipe_never_runs(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    d = _warmed_worker(platform, r, start_worker)
    slow = d.dispatch("t_piped", {"tag": "slow", "mode": "sleep", "seconds": 0.8})
    target = d.dispatch("t_piped", {"tag": "target"})
    wait_for(lambda: slow.status() == Status.STARTED, message="the slow task to start")
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 2, message="the target fetched behind it")
    outcome = cancel(platform, target.id)
    print("cancel:", outcome.describe())
    assert outcome.status is not Status.STARTED  # "cancel requested; a worker has fetched it and drops it ..."
    wait_for(lambda: slow.status() == Status.SUCCEEDED and target.status() in TERMINAL, message="both to end")
    assert target.status() == Status.CANCELLED
    assert b"target" not in r.lrange("test:done", 0, -1)


@pytest.mark.slow
@pytest.mark.parametrize("concurrency", ["1", "2"])
def test_critical_tasks_overtake_a_pipelined_backlog_of_low_tasks(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess], concurrency: str) -> None:
    d = Dispatcher(platform)
    start_worker("ai", "--pool", "prefork", "--concurrency", concurrency)
    d.dispatch_batch([{"type": "t_record", "payload": {"tag": f"low-{i}"}, "priority": "low"} for i in range(3000)])
    wait_for(lambda: r.llen("test:done") >= 400, 60, message="the worker to learn the low tasks are quick")
    for i in range(20):
        d.dispatch("t_record", {"tag": f"crit-{i}"}, priority="critical")
    wait_for(lambda: sum(1 for t in r.lrange("test:done", 0, -1) if t.startswith(b"crit")) == 20,
             timeout_s=60, message="the critical tasks")
    done = [t.decode() for t in r.lrange("test:done", 0, -1)]
    first = min(i for i, tag in enumerate(done) if tag.startswith("crit"))
    last = max(i for i, tag in enumerate(done) if tag.startswith("crit"))
    lows = sum(1 for tag in done[first:last] if tag.startswith("low"))
    print("low tasks between the first and last critical:", lows, "stats:", pool_stats(platform))
    assert lows < 50, lows
