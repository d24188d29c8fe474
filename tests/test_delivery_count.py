"""The poison guard's delivery count, kept in the status record (field ``deliveries``): counted by the fetch for
every message before it runs (also those a solo batch defers), undone by a give-back, restarted when a run ends."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from meetingtasks import dispatch
from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

# Slow tier: every test runs worker subprocesses through kills, redeliveries or timeouts.
pytestmark = pytest.mark.slow


def _rpush_calls(r: redis.Redis) -> int:
    return int(r.info("commandstats").get("cmdstat_rpush", {}).get("calls", 0))


def test_a_solo_batch_counts_every_delivery_at_fetch_and_a_give_back_takes_it_back(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    # Given one delivery allowed per task, and a solo batch whose first task overruns the batch budget
    d = Dispatcher(platform)
    slow = d.dispatch("t_sleep", {"tag": "slow", "seconds": 1.5}, priority="low")
    rest = [d.dispatch("t_record", {"tag": f"rest-{i}"}, priority="low") for i in range(5)]
    pushes = _rpush_calls(r)
    start_worker("ai", "--pool", "solo", env_overrides={"MEETINGTASKS_SOLO_BATCH_MS": "100",
                                                        "MEETINGTASKS_MAX_DELIVERIES": "1"})
    # When the first fetch takes all six and only the slow one starts
    wait_for(lambda: slow.status() == Status.STARTED, message="the slow task to start")
    # Then each deferred message has its delivery counted already, before it runs (the poison guard needs it)
    assert [h.status() for h in rest] == [Status.QUEUED] * len(rest)
    assert [r.hget(platform.keys.status(h.id), "deliveries") for h in rest] == [b"1"] * len(rest)
    # and once the batch overran with a critical task waiting (nothing of a higher priority waiting, the batch would
    # run on), they went back with their count undone: fetched again, each is delivery 1, under max_deliveries=1,
    # so every one runs and none is dead-lettered as a poison message
    urgent = d.dispatch("t_record", {"tag": "urgent"}, priority="critical")
    wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in [slow, urgent, *rest]),
             message="every task to finish")
    # (RPUSHes: one per t_record run, two by the slow task's started/finished marks, one per message given back)
    assert _rpush_calls(r) - pushes >= 2 * len(rest) + 3, "the rest of the batch was not given back"
    done = [x.decode() for x in r.lrange("test:done", 0, -1)]
    assert done.index("urgent") < min(done.index(f"rest-{i}") for i in range(len(rest))), done
    assert platform.dead_letters.count(r, "ai") == 0
    for h in [slow, urgent, *rest]:
        assert [s for s, _, _ in h.info().history] == [Status.QUEUED, Status.STARTED, Status.SUCCEEDED], h.id
        assert r.hget(platform.keys.status(h.id), "deliveries") == b"0"  # the run ended: the count restarts


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_a_poison_message_that_kills_a_whole_worker_is_dead_lettered_after_max_deliveries(
        pool: str, platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    # Given workers allowing 2 deliveries per task, and a task that kills its worker's process (solo, threads: the
    # worker itself) every time it runs
    handle = dispatch("t_crash", {"tag": "poison"})
    overrides = {"MEETINGTASKS_MAX_DELIVERIES": "2"}
    worker = start_worker("ai", "--pool", pool, "--concurrency", "1", env_overrides=overrides)
    # When each death is followed by a fresh worker (whose restore sweep redelivers the message)
    for _ in range(4):
        if platform.dead_letters.list(r, "ai"):
            break
        wait_for(lambda w=worker: w.proc.poll() is not None or platform.dead_letters.list(r, "ai"), 60,
                 message="the worker to die or the message to be dead-lettered")
        if worker.proc.poll() is not None:
            worker = start_worker("ai", "--pool", pool, "--concurrency", "1", env_overrides=overrides)
    # Then it is dead-lettered at its third delivery instead of run a third time
    letters = wait_for(lambda: platform.dead_letters.list(r, "ai"), 60, message="the poison dead letter")
    (letter,) = letters  # type: ignore[misc]
    assert letter.reason == "PoisonMessage" and letter.task_id == handle.id
    assert "delivered 3 times" in letter.error
    assert [x.decode().split("|")[0] for x in r.lrange("test:attempts", 0, -1)] == ["poison"] * 2
    assert handle.status() == "DEAD_LETTERED"
    assert r.hget(platform.keys.status(handle.id), "deliveries") == b"0"
    # and the worker that dead-lettered it keeps consuming
    assert dispatch("t_echo", {"tag": "after"}).wait(timeout=20) == {"tag": "after"}
    assert worker.proc.poll() is None
