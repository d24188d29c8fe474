"""A prefork worker sends a busy pool process its next job while it runs one, only for quick task types
(meetingtasks.worker.pool, meetingtasks.worker.pacing)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from meetingtasks.enqueue.dispatcher import Dispatcher, TaskHandle
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status
from meetingtasks.worker.pacing import PoolPacing
from meetingtasks.worker.pool import PIPELINE_DEPTH, _JobsPerProcess
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess, pool_stats

#: A budget under which t_record is a quick type on any machine (jobs go ahead while a run averages under a
#: quarter of it: see meetingtasks.worker.pacing).
QUICK_WITH_MARGIN = {"MEETINGTASKS_SOLO_BATCH_MS": "40"}


def _started_at(handle: TaskHandle) -> float:
    return next(when for status, when, _ in handle.info().history if status == Status.STARTED)


def test_a_process_holds_at_most_the_pipelines_depth_and_forgets_a_process_that_is_gone() -> None:
    jobs = _JobsPerProcess(2)
    jobs.add(7)
    assert 7 not in jobs and len(jobs) == 0  # running one: it may take the next
    jobs.add(7)
    assert 7 in jobs and len(jobs) == 1 and jobs.sent_ahead == 1 and jobs.most == 2
    jobs.job_done(7)
    assert 7 not in jobs
    jobs.add(7)
    jobs.discard(7)  # the process died: its count goes with it
    assert 7 not in jobs and jobs.jobs == {}
    jobs.job_done(7)  # a late result of the dead process's job does not go negative
    assert jobs.jobs == {}


def test_jobs_go_ahead_only_while_every_task_in_the_pool_is_of_a_quick_type() -> None:
    pacing = PoolPacing(processes=1, pipeline=PIPELINE_DEPTH, batch_max=16)
    budget_s = 0.004
    assert pacing.pool_limit() == 1  # nothing learnt yet
    for i in range(20):  # a quick type (runs far under the budget)
        pacing.handed(f"q{i}", "quick", 0, budget_s)
        pacing.ended(f"q{i}", budget_s)
    assert pacing.pool_limit() == PIPELINE_DEPTH
    pacing.handed("s", "unseen", 0, budget_s)  # a type never run here
    assert pacing.pool_limit() == 1
    pacing.ended("s", budget_s)
    assert pacing.pool_limit() > 1


@pytest.mark.slow
def test_a_prefork_process_gets_its_next_quick_task_while_it_runs_one(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    n = 400
    d = Dispatcher(platform)
    handles = [d.dispatch("t_record", {"tag": f"q-{i}"}) for i in range(n)]
    # A 40 ms budget makes t_record (about 1 ms from hand-over to ack) quick with a tenfold margin on a loaded
    # machine too: under the default 4 ms a busy CI runner measured it over the 1 ms line and never sent one ahead.
    start_worker("ai", "--pool", "prefork", "--concurrency", "1", env_overrides=QUICK_WITH_MARGIN)
    wait_for(lambda: r.llen("test:done") == n, 60, message="every task to run")
    wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in handles), message="every outcome recorded")
    pool = pool_stats(platform)
    assert pool["jobs-sent-ahead"] > n // 4, pool
    assert 1 < pool["most-jobs-per-process"] <= PIPELINE_DEPTH, pool
    assert sorted(x.decode() for x in r.lrange("test:done", 0, -1)) == sorted(f"q-{i}" for i in range(n))
    assert r.hlen(platform.keys.unacked("ai")) == 0


@pytest.mark.slow
def test_a_quick_task_never_waits_in_a_pipe_behind_a_slow_one_while_a_process_frees(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    d = Dispatcher(platform)
    start_worker("ai", "--pool", "prefork", "--concurrency", "2", env_overrides=QUICK_WITH_MARGIN)
    warm = [d.dispatch("t_record", {"tag": f"warm-{i}"}) for i in range(200)]  # the pool learns t_record is quick
    wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in warm), 60, message="the warm-up")
    long = d.dispatch("t_sleep", {"tag": "long", "seconds": 4})
    short = d.dispatch("t_sleep", {"tag": "short", "seconds": 0.5})
    wait_for(lambda: long.status() == Status.STARTED and short.status() == Status.STARTED,
             message="both slow tasks to start")
    quick = d.dispatch("t_record", {"tag": "quick"})
    wait_for(lambda: quick.status() == Status.SUCCEEDED, 20, message="the quick task")
    # It waited for the first process to free (the short task), not in the long task's pipe.
    assert _started_at(quick) - _started_at(short) < 2.5, (_started_at(quick), _started_at(short), _started_at(long))
    assert long.status() == Status.STARTED
    assert pool_stats(platform)["most-jobs-per-process"] <= PIPELINE_DEPTH


@pytest.mark.slow
@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_critical_task_a_refill_fetches_goes_ahead_of_the_low_ones_already_in_reserve(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess], pool: str) -> None:
    d = Dispatcher(platform)
    # 8 ms low tasks under a 100 ms budget: the reserve holds about a dozen, refilled when down to a quarter.
    lows = [d.dispatch("t_record", {"tag": f"low-{i}", "seconds": 0.008}, priority="low") for i in range(200)]
    start_worker("ai", "--pool", pool, "--concurrency", "1", env_overrides={"MEETINGTASKS_SOLO_BATCH_MS": "100"})
    wait_for(lambda: r.llen("test:done") >= 40, 30, message="the reserve to be sized from a few runs")
    critical = d.dispatch("t_record", {"tag": "critical"}, priority="critical")
    unacked = platform.keys.unacked("ai")
    wait_for(lambda: any(critical.id.encode() in raw for raw in r.hvals(unacked)), 10, interval_s=0.002,
             message="a refill fetch to take the critical task")
    fetched_at = time.time()
    wait_for(lambda: critical.status() == Status.SUCCEEDED, 10, message="the critical task")
    critical_started = _started_at(critical)
    wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in lows), 60, message="every low task")
    # Once fetched it runs after the task running then and the jobs already in that process's pipe (prefork: two at
    # most), not after the low tasks still in reserve.
    overtaken = [h for h in lows if fetched_at < _started_at(h) < critical_started]
    assert len(overtaken) <= 3, len(overtaken)
    assert r.hlen(unacked) == 0 or wait_for(lambda: r.hlen(unacked) == 0, message="every ack applied")
