"""A prefork worker's pool children hand their task outcomes to the parent, which records them with its next fetch,
and the parent keeps messages in reserve for its processes, as a threads worker does for its threads
(meetingtasks.worker.transport, the reserve's section of ``Channel``)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis

from meetingtasks.enqueue.dispatcher import Dispatcher, TaskHandle
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status
from meetingtasks.store.wake import WAKE_TOKENS_MAX
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

# Slow tier: every test runs worker subprocesses through kills, redeliveries or timeouts.
pytestmark = pytest.mark.slow


def _script_calls(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return sum(int(stats.get(name, {}).get("calls", 0)) for name in ("cmdstat_evalsha", "cmdstat_eval"))


def _started_at(handle: TaskHandle) -> float:
    return next(when for status, when, _ in handle.info().history if status == Status.STARTED)


def test_a_prefork_child_records_its_outcome_through_the_parents_fetch(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    n = 300
    handles = [Dispatcher(platform).dispatch("t_record", {"tag": f"p-{i}"}) for i in range(n)]
    events = r.pubsub()
    events.subscribe(platform.keys.status_channel)
    wait_for(lambda: events.get_message(timeout=0.1) is not None)  # the subscribe confirmation
    before = _script_calls(r)
    # The delayed pump (a script call per tick) is held off so that the count below is the tasks' own.
    start_worker("ai", "--pool", "prefork", "--concurrency", "1", env_overrides={"MEETINGTASKS_PUMP_INTERVAL_S": "60"})
    wait_for(lambda: r.llen("test:done") == n, message="every task to run")
    wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in handles), message="every outcome recorded")
    seen: list[tuple[str, str]] = []
    while (message := events.get_message(timeout=0.5)) is not None:
        event = json.loads(message["data"])
        seen.append((event["id"], event["status"]))
    events.close()
    for h in handles:
        assert [status for task_id, status in seen if task_id == h.id] == ["STARTED", "SUCCEEDED"], h.id
        record = h.info()
        assert [s for s, _, _ in record.history] == [Status.QUEUED, Status.STARTED, Status.SUCCEEDED], h.id
        assert "wait_s" in record.fields and "worker" in record.fields, h.id
        assert r.hget(platform.keys.status(h.id), "deliveries") == b"0"  # the run ended: the count restarts
    # One script call per task (the parent's fetch, which also records the outcome and the ack), not two: the
    # child no longer writes its own outcome. (Once idle, the worker fetches once per wake token left over from the
    # dispatches, at most WAKE_TOKENS_MAX.)
    calls = _script_calls(r) - before
    assert calls < 1.3 * n + WAKE_TOKENS_MAX, f"{calls} script calls for {n} tasks"
    assert r.hlen(platform.keys.unacked("ai")) == 0
    assert sorted(x.decode() for x in r.lrange("test:done", 0, -1)) == sorted(f"p-{i}" for i in range(n))


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_reserved_message_that_waited_too_long_goes_back_behind_a_critical_task(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess], pool: str) -> None:
    d = Dispatcher(platform)
    slow = d.dispatch("t_sleep", {"tag": "slow", "seconds": 1.5}, priority="low")
    after = [d.dispatch("t_record", {"tag": f"after-{i}"}, priority="low") for i in range(5)]
    start_worker("ai", "--pool", pool, "--concurrency", "1", env_overrides={"MEETINGTASKS_SOLO_BATCH_MS": "100"})

    wait_for(lambda: slow.status() == Status.STARTED, message="the slow task to start")
    # The next message is fetched into the reserve while the slow one runs: leased, not STARTED.
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 2, message="one message in reserve")
    assert r.llen("test:finished") == 0, "the slow task is still running"
    assert [h.status() for h in after] == [Status.QUEUED] * len(after)
    critical = d.dispatch("t_echo", {"tag": "urgent"}, priority="critical")

    wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in [slow, critical, *after]),
             message="every task to finish")
    # The reserve had waited past the budget when the process freed: it went back, and the next fetch took the
    # critical task first.
    starts = [_started_at(h) for h in after]
    assert _started_at(critical) < min(starts)
    assert starts == sorted(starts), "given back in their order"
    for h in [slow, critical, *after]:
        assert [s for s, _, _ in h.info().history] == [Status.QUEUED, Status.STARTED, Status.SUCCEEDED], h.id
        assert h.info().attempt == 1
        assert r.hget(platform.keys.status(h.id), "deliveries") == b"0"  # the run ended: the count restarts
    assert r.hlen(platform.keys.unacked("ai")) == 0



@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_reserve_that_waited_too_long_with_nothing_of_a_higher_priority_waiting_is_run_not_given_back(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess], pool: str) -> None:
    d = Dispatcher(platform)
    slow = d.dispatch("t_sleep", {"tag": "slow", "seconds": 0.5}, priority="low")
    after = [d.dispatch("t_record", {"tag": f"after-{i}"}, priority="low") for i in range(5)]
    pushed_back = int(r.info("commandstats").get("cmdstat_rpush", {}).get("calls", 0))
    start_worker("ai", "--pool", pool, "--concurrency", "1", env_overrides={"MEETINGTASKS_SOLO_BATCH_MS": "100"})

    wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in [slow, *after]), message="every task to finish")
    # The reserve waited past the budget behind the slow task, but no queue above "low" held anything: it was run
    # as fetched instead of going back (a give-back pushes each message back with RPUSH) to be fetched again. The
    # only RPUSHes are the handlers' own (one per t_record, two for t_sleep's records).
    handlers_pushes = len(after) + 2
    assert int(r.info("commandstats").get("cmdstat_rpush", {}).get("calls", 0)) == pushed_back + handlers_pushes
    starts = [_started_at(h) for h in [slow, *after]]
    assert starts == sorted(starts), "run in their order"
    for h in [slow, *after]:
        assert [s for s, _, _ in h.info().history] == [Status.QUEUED, Status.STARTED, Status.SUCCEEDED], h.id
        assert r.hget(platform.keys.status(h.id), "deliveries") == b"0"  # the run ended: the count restarts
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0, message="every ack applied")


def test_a_threads_worker_records_each_reserved_task_once_started_and_once_ended(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    n = 200
    d = Dispatcher(platform)
    handles = [d.dispatch("t_record", {"tag": f"q-{i}"}) for i in range(n)]
    # Behind them, one that runs long: taken from the reserve, it shows STARTED while it runs (its STARTED, held back
    # to be written with its outcome, goes within START_FLUSH_S once the task runs on).
    slow = d.dispatch("t_sleep", {"tag": "slow", "seconds": 3}, priority="low")
    events = r.pubsub()
    events.subscribe(platform.keys.status_channel)
    wait_for(lambda: events.get_message(timeout=0.1) is not None)  # the subscribe confirmation
    start_worker("ai", "--pool", "threads", "--concurrency", "4")
    wait_for(lambda: r.llen("test:done") == n, message="every quick task to run")
    wait_for(lambda: r.llen("test:started") == 1, message="the slow task to run")
    wait_for(lambda: slow.status() == Status.STARTED, timeout_s=1, message="the slow task to show as running")
    assert r.llen("test:finished") == 0, "shown while it runs"
    wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in [*handles, slow]), message="every outcome recorded")
    seen: list[tuple[str, str]] = []
    while (message := events.get_message(timeout=0.5)) is not None:
        event = json.loads(message["data"])
        seen.append((event["id"], event["status"]))
    events.close()
    # Watchers (gateway, exporter) get both events of every task, STARTED first, also when they were written as one.
    for h in [*handles, slow]:
        assert [status for task_id, status in seen if task_id == h.id] == ["STARTED", "SUCCEEDED"], h.id
        assert [s for s, _, _ in h.info().history] == [Status.QUEUED, Status.STARTED, Status.SUCCEEDED], h.id
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0, message="every ack applied")


def test_a_long_task_from_a_prefork_reserve_shows_started_while_it_runs(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    d = Dispatcher(platform)
    leads = [d.dispatch("t_record", {"tag": f"lead-{i}"}, priority="low") for i in range(3)]
    slow = d.dispatch("t_sleep", {"tag": "slow", "seconds": 3}, priority="low")
    start_worker("ai", "--pool", "prefork", "--concurrency", "1", env_overrides={"MEETINGTASKS_SOLO_BATCH_MS": "100"})
    wait_for(lambda: r.llen("test:started") == 1, message="the slow task's handler to start")
    # Handed over from the reserve, it records its STARTED in the pool child, which writes it itself once the task
    # has run for START_FLUSH_S (a quick task's goes to the parent with its outcome, written as one).
    wait_for(lambda: slow.status() == Status.STARTED, timeout_s=2, message="the slow task to show as running")
    assert r.llen("test:finished") == 0, "shown while it runs"
    wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in [*leads, slow]), message="every task to finish")
    for h in [*leads, slow]:
        assert [s for s, _, _ in h.info().history] == [Status.QUEUED, Status.STARTED, Status.SUCCEEDED], h.id
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0, message="every ack applied")


@pytest.mark.parametrize("pool", ["solo", "threads", "prefork"])
def test_an_idle_reserve_workers_task_never_shows_ended_with_its_message_still_unacked(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess], pool: str) -> None:
    # A reserve worker's consumer waits idle while its one task runs (nothing left to reserve): the task's outcome
    # and its ack must reach Redis in one write, or a reader sees the task ended with its message still leased.
    # (A solo worker, which has no reserve, is held to the same guarantee.)
    start_worker("ai", "--pool", pool, "--concurrency", "1")
    d = Dispatcher(platform)
    unacked = platform.keys.unacked("ai")
    for i in range(15):
        h = d.dispatch("t_sleep", {"tag": f"one-{i}", "seconds": 0.05})

        def ended_snapshot(task_id: str = h.id) -> tuple[bytes | None, int] | None:
            with r.pipeline(transaction=True) as pipe:  # both read at one instant
                pipe.hget(platform.keys.status(task_id), "status")
                pipe.hlen(unacked)
                status, leased = pipe.execute()
            return (status, leased) if status == b"SUCCEEDED" else None

        snapshot = wait_for(ended_snapshot, interval_s=0.0005, message=f"task {i} to end")
        assert snapshot == (b"SUCCEEDED", 0), f"task {i} showed SUCCEEDED with its message still unacked"
