"""Races of a solo worker's overlapped fetch (meetingtasks.worker.transport, ``Channel._prefetch``) and of the
wake list that FETCH empties, found in review."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

import tests.support.spin_tasks  # noqa: F401  (registers t_spin)
from meetingtasks.core.settings import Settings
from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.operations.embedded import RedisServer
from meetingtasks.store.connections import reset_shared_clients
from meetingtasks.store.platform import Platform, configure
from meetingtasks.store.status import Status
from tests.support.waiting import wait_for
from tests.support.watching import Monitor
from tests.support.workers import WorkerProcess, worker_env

pytestmark = pytest.mark.slow  # worker processes with long tasks and Redis restarts


def test_a_batch_that_ends_as_the_start_flusher_fires_does_not_stall_the_worker(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    # Tasks a little longer than the start flusher's age (25 ms): each batch is one task, fetched early behind the
    # one before, and the flusher's thread often fires just as the consumer ends a batch. If the flusher reads the
    # prefetched reply after the consumer decided to wait for it, the consumer waits for a reply that never comes.
    n = 400
    d = Dispatcher(platform)
    handles = [d.dispatch("t_record", {"tag": f"s-{i}", "seconds": 0.022 + 0.001 * (i % 9)}, priority="low")
               for i in range(n)]
    start_worker("ai", "--pool", "solo")
    wait_for(lambda: r.llen("test:done") == n, timeout_s=90, message="every task to run (the worker stalled)")
    wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in handles), message="every outcome recorded")
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0, message="every ack applied")
    done = [x.decode() for x in r.lrange("test:done", 0, -1)]
    assert sorted(done) == sorted(f"s-{i}" for i in range(n)), "each task ran exactly once"


@pytest.mark.parametrize("pool", [("--pool", "prefork", "--concurrency", "1"), ("--pool", "solo"),
                                  ("--pool", "threads", "--concurrency", "1")])
def test_a_task_cancelled_while_its_worker_holds_it_unstarted_never_runs(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess], pool: tuple[str, ...]) -> None:
    d = Dispatcher(platform)
    victim = d.dispatch("t_record", {"tag": "victim"}, priority="low")
    # Fetched first (normal before low), in the same fetch as the victim: while it runs, the worker holds the victim
    # unstarted (prefork, threads: in its reserve; solo: behind it in the batch), and its status still says QUEUED.
    canceller = d.dispatch("t_cancel_other", {"tag": victim.id, "seconds": 0.05}, priority="normal")
    start_worker("ai", *pool, env_overrides={"MEETINGTASKS_SOLO_BATCH_MS": "100"})
    wait_for(lambda: canceller.status() == Status.SUCCEEDED, message="the canceller to finish")
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0 and r.llen("ai.low") == 0,
             message="the victim taken and dropped or run")
    wait_for(lambda: victim.status().is_terminal, message="the victim's outcome")
    done = [x.decode() for x in r.lrange("test:done", 0, -1)]
    # The cancel saw the victim fetched (its delivery count) and said so rather than CANCELLED; the worker read the
    # flag again before starting it, past the canceller's last 50 ms, and dropped it.
    assert [x.decode() for x in r.lrange("test:cancel-outcomes", 0, -1)] == [
        f"{victim.id}: cancel requested; a worker has fetched it and drops it before it starts (CANCELLED then)"]
    assert "victim" not in done, "the cancelled task ran"
    assert victim.status() == Status.CANCELLED
    # Dropped from the reserve or batch unstarted ([QUEUED, CANCELLED]), or, when it waited there past the budget
    # (a loaded machine), given back and then dropped by the next fetch, which records STARTED as it reads the flag.
    assert [s for s, _, _ in victim.info().history] in (
        [Status.QUEUED, Status.CANCELLED], [Status.QUEUED, Status.STARTED, Status.CANCELLED])


def test_a_threads_worker_hands_a_reserved_task_to_a_free_thread_without_reading_its_flag_again(
        platform: Platform, r: redis.Redis, redis_url: str, start_worker: Callable[..., WorkerProcess]) -> None:
    # Eight threads each keep the GIL busy for 2 ms: a freed thread often waits over 5 ms (CANCEL_RECHECK_S) for the
    # GIL before it starts its task. The flags read within 5 ms of the hand-over stand (the task waited in no queue):
    # a reserve whose flags are older than that is read again in one MGET at a hand-over, never a GET per task start.
    n = 200
    d = Dispatcher(platform)
    handles = [d.dispatch("t_spin", {"tag": f"s-{i}"}) for i in range(n)]
    with Monitor(redis_url) as monitor:
        start_worker("ai", "--pool", "threads", "--concurrency", "8",
                     env_overrides={"MEETINGTASKS_INCLUDE": "tests.support.tasks,tests.support.spin_tasks"})
        wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in handles), timeout_s=60,
                 message="every task to run")
    cancel_keys = platform.keys.cancel("")
    reads = [c.split()[0].upper() for c in monitor.commands if cancel_keys in c]
    assert reads.count("GET") == 0, f"{reads.count('GET')} tasks read their cancel flag again as they started"
    assert sorted(x.decode() for x in r.lrange("test:done", 0, -1)) == sorted(f"s-{i}" for i in range(n))


def test_a_reserved_message_outliving_its_lease_runs_once_with_a_second_worker(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    # The lease (2 s) is far shorter than the task that holds the reserve's process (4 s): the reserved message's
    # lease is renewed meanwhile, so the second worker neither takes it nor runs it a second time.
    env = {"MEETINGTASKS_VISIBILITY_TIMEOUT_S": "2", "MEETINGTASKS_SOLO_BATCH_MS": "100"}
    d = Dispatcher(platform)
    slow = d.dispatch("t_sleep", {"tag": "slow", "seconds": 4}, priority="low")
    held = d.dispatch("t_record", {"tag": "held"}, priority="low")
    start_worker("ai", "--pool", "prefork", "--concurrency", "1", env_overrides=env)
    wait_for(lambda: slow.status() == Status.STARTED and r.llen("ai.low") == 0, message="the reserve to fill")
    start_worker("ai", "--pool", "solo", env_overrides=env)
    wait_for(lambda: slow.status() == Status.SUCCEEDED and held.status() == Status.SUCCEEDED, timeout_s=30,
             message="both tasks to finish")
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0 and r.llen("ai.low") == 0, message="every ack applied")
    assert [x.decode() for x in r.lrange("test:done", 0, -1)] == ["held"], "the reserved task ran exactly once"
    assert [s for s, _, _ in held.info().history] == [Status.QUEUED, Status.STARTED, Status.SUCCEEDED]
    assert r.hget(platform.keys.status(held.id), "deliveries") == b"0"  # the run ended: the count restarts


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_prefork_worker_stopped_with_a_reserve_gives_it_back_unstarted(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess], pool: str) -> None:
    d = Dispatcher(platform)
    slow = d.dispatch("t_sleep", {"tag": "slow", "seconds": 1.5}, priority="low")
    held = [d.dispatch("t_record", {"tag": f"held-{i}"}, priority="low") for i in range(2)]
    worker = start_worker("ai", "--pool", pool, "--concurrency", "2")
    # Its handler running, not only its STARTED recorded: a message the pool has not taken yet when the stop comes
    # goes back to its queue instead (Celery's warm shutdown discards it from the pool).
    wait_for(lambda: any(x.startswith(b"slow|") for x in r.lrange("test:started", 0, -1)),
             message="the slow task's handler to start")
    # Warm shutdown: the slow task finishes, after the consuming channel closed; the reserve goes back. The timeout
    # is past billiard's own 30 s: a pool child that ran a task just as the stop came sometimes waits that long for
    # the parent to count its result before it exits.
    worker.stop(timeout_s=45)
    # Its outcome and its ack (left behind by the closed channel) are applied before the worker exits.
    assert slow.status() == Status.SUCCEEDED
    assert r.hlen(platform.keys.unacked("ai")) == 0, "nothing left leased once the worker has exited"
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0, message="nothing left leased")
    ran = [x.decode() for x in r.lrange("test:done", 0, -1)]
    for h in held:
        tag = f"held-{held.index(h)}"
        if tag in ran:  # ran on the second process before the stop
            assert [s for s, _, _ in h.info().history] == [Status.QUEUED, Status.STARTED, Status.SUCCEEDED]
        else:  # back on its queue: never fetched as far as its record goes, or its STARTED undone (see below)
            history = [s for s, _, _ in h.info().history]
            assert history in ([Status.QUEUED], [Status.QUEUED, Status.STARTED, Status.QUEUED]), (h.id, history)
            assert h.status() == Status.QUEUED
            assert r.hget(platform.keys.status(h.id), "deliveries") in (None, b"0")  # the count restarts
    start_worker("ai", "--pool", "solo")
    wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in held), message="the given-back tasks to run")
    assert sorted(x.decode() for x in r.lrange("test:done", 0, -1)) == ["held-0", "held-1"], "each ran once"
    for h in held:
        assert [s for s, _, _ in h.info().history][-2:] == [Status.STARTED, Status.SUCCEEDED], h.id


def test_prefork_tasks_that_end_while_redis_is_away_are_recorded_and_run_once(
        own_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs.txt"
    # The outage (3.5 s) is shorter than the visibility timeout: within that, a running task's lease outlives it and
    # nothing redelivers the task. (An outage longer than the visibility timeout may run a running task again, in
    # every pool: docs/guarantees.md.)
    env = worker_env(own_redis.url, MT_TEST_RUNS_FILE=str(runs), MEETINGTASKS_VISIBILITY_TIMEOUT_S="10")
    for key, value in env.items():
        if key.startswith("MEETINGTASKS_"):
            monkeypatch.setenv(key, value)
    import tests.support.tasks  # noqa: F401

    platform = configure(Settings())
    r = platform.redis()
    worker = WorkerProcess("ai", env, tmp_path / "worker.log", ["--pool", "prefork", "--concurrency", "1"])
    try:
        worker.wait_ready()
        d = Dispatcher(platform)
        handles = [d.dispatch("t_nap", {"tag": "away-0", "seconds": 1.5})]  # never touches Redis
        wait_for(lambda: all(h.status() == Status.STARTED for h in handles), message="the task to start")
        own_redis.stop()
        # The outage itself (nothing to poll): the task ends in the middle of it, and its child hands the outcome to a
        # parent whose consuming channel went with the connection.
        time.sleep(3.5)
        own_redis.start()
        reset_shared_clients()
        wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in handles), timeout_s=40,
                 message="the outcome recorded")
        wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0, timeout_s=40, message="the ack applied")
        tags = [line.split("|")[0] for line in runs.read_text().splitlines()]
        assert sorted(tags) == ["away-0"], "the task ran once"
        assert worker.proc.poll() is None
    finally:
        worker.stop()


def test_a_prefork_worker_with_one_task_per_child_records_every_outcome_and_retry_in_order(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    # Every child exits after one task: the reserve is handed to a fresh process each time, and the outcomes ride
    # back with the last result of each child.
    d = Dispatcher(platform)
    quick = [d.dispatch("t_record", {"tag": f"c-{i}"}, priority="low") for i in range(6)]
    flaky = d.dispatch("t_flaky", {"tag": "flaky", "fail_times": 1}, priority="low")
    start_worker("ai", "--pool", "prefork", "--concurrency", "1", "--max-tasks-per-child", "1")
    wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in [*quick, flaky]), timeout_s=60,
             message="every task to finish")
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0, message="every ack applied")
    assert sorted(x.decode() for x in r.lrange("test:done", 0, -1)) == sorted(f"c-{i}" for i in range(6))
    for h in quick:
        assert [s for s, _, _ in h.info().history] == [Status.QUEUED, Status.STARTED, Status.SUCCEEDED], h.id
    assert [s for s, _, _ in flaky.info().history] == [
        Status.QUEUED, Status.STARTED, Status.RETRYING, Status.STARTED, Status.SUCCEEDED]


def test_a_batch_that_overruns_with_a_batch_prefetched_behind_it_gives_both_back_in_queue_order(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    from meetingtasks.worker.transport import SOLO_BATCH_MAX

    d = Dispatcher(platform)
    # The first task overruns the budget (4 ms) well before the start flusher's age (25 ms): the consumer itself
    # gives back the rest of its batch and the batch prefetched behind it.
    d.dispatch("t_record", {"tag": "r-0", "seconds": 0.012}, priority="low")
    for i in range(1, 3 * SOLO_BATCH_MAX):
        d.dispatch("t_record", {"tag": f"r-{i}"}, priority="low")
    start_worker("ai", "--pool", "solo")
    wait_for(lambda: r.llen("test:done") == 3 * SOLO_BATCH_MAX, message="every task to run")
    done = [x.decode() for x in r.lrange("test:done", 0, -1)]
    assert done == [f"r-{i}" for i in range(3 * SOLO_BATCH_MAX)], "a solo worker runs one queue in its order"
