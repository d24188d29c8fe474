"""A solo worker fetches a time-budgeted batch (meetingtasks.worker.transport, MEETINGTASKS_SOLO_BATCH_MS)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
import redis

from meetingtasks.enqueue.dispatcher import Dispatcher, TaskHandle
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

# Slow tier: every test runs worker subprocesses through kills, redeliveries or timeouts.
pytestmark = pytest.mark.slow


def _fetch_calls(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def _history(handle: TaskHandle) -> list[Status]:
    return [status for status, _, _ in handle.info().history]


def _started_at(handle: TaskHandle) -> float:
    return next(when for status, when, _ in handle.info().history if status == Status.STARTED)


@pytest.mark.parametrize(("budget_ms", "batched"), [("20", True), ("0", False)])
def test_a_solo_worker_takes_quick_tasks_in_batches_and_records_each(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess],
        budget_ms: str, batched: bool) -> None:
    n = 300
    handles = [Dispatcher(platform).dispatch("t_record", {"tag": f"q-{i}"}) for i in range(n)]
    events = r.pubsub()
    events.subscribe(platform.keys.status_channel)
    wait_for(lambda: events.get_message(timeout=0.1) is not None)  # the subscribe confirmation
    before = _fetch_calls(r)
    start_worker("ai", "--pool", "solo", env_overrides={"MEETINGTASKS_SOLO_BATCH_MS": budget_ms})
    wait_for(lambda: r.llen("test:done") == n, message="every task to run")
    wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in handles), message="every outcome recorded")
    seen: list[tuple[str, str]] = []
    while (message := events.get_message(timeout=0.5)) is not None:
        event = json.loads(message["data"])
        seen.append((event["id"], event["status"]))
    events.close()
    # Watchers (gateway, exporter) get both events of every task, STARTED first, also when they were written as one.
    for h in handles:
        assert [status for task_id, status in seen if task_id == h.id] == ["STARTED", "SUCCEEDED"], h.id
    calls = _fetch_calls(r) - before
    if batched:
        assert calls < n / 2, f"{calls} fetch calls for {n} quick tasks: not batched"
    else:
        assert calls >= n, f"{calls} fetch calls for {n} tasks with batching off"
    for h in handles:
        record = h.info()
        assert [s for s, _, _ in record.history] == [Status.QUEUED, Status.STARTED, Status.SUCCEEDED], h.id
        assert record.attempt == 1
        assert "wait_s" in record.fields and "worker" in record.fields
        assert r.hget(platform.keys.status(h.id), "deliveries") == b"0"  # the run ended: the count restarts
    assert r.hlen(platform.keys.unacked("ai")) == 0
    assert sorted(x.decode() for x in r.lrange("test:done", 0, -1)) == sorted(f"q-{i}" for i in range(n))


def test_a_slow_task_in_a_batch_shows_started_and_the_rest_goes_back_behind_a_critical_task(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    d = Dispatcher(platform)
    first = d.dispatch("t_record", {"tag": "first"}, priority="low")
    slow = d.dispatch("t_sleep", {"tag": "slow", "seconds": 1.5}, priority="low")
    after = [d.dispatch("t_record", {"tag": f"after-{i}"}, priority="low") for i in range(10)]
    # Its first fetch takes all twelve; only "first" starts at once. (A budget that a cold first task, slow
    # with first-call imports, stays within; the slow one overruns it.)
    start_worker("ai", "--pool", "solo", env_overrides={"MEETINGTASKS_SOLO_BATCH_MS": "100"})

    # The slow task was fetched behind "first": it records its own STARTED, and a timer applies it while it runs.
    wait_for(lambda: slow.status() == Status.STARTED, message="the slow task to show as STARTED")
    assert r.llen("test:finished") == 0, "the slow task is still running"
    assert r.hlen(platform.keys.unacked("ai")) >= len(after) + 1, "the rest of the batch is held"
    assert [h.status() for h in after] == [Status.QUEUED] * len(after)
    critical = d.dispatch("t_echo", {"tag": "urgent"}, priority="critical")

    wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in [first, slow, critical, *after]),
             message="every task to finish")
    # Given back when the batch overran, the rest was fetched again behind the critical task.
    starts = [_started_at(h) for h in after]
    assert _started_at(critical) < min(starts)
    assert starts == sorted(starts), "given back in their order"
    for h in [first, slow, critical, *after]:
        assert _history(h) == [Status.QUEUED, Status.STARTED, Status.SUCCEEDED], h.id
        assert h.info().attempt == 1
        assert r.hget(platform.keys.status(h.id), "deliveries") == b"0"  # the run ended: the count restarts
    assert r.hlen(platform.keys.unacked("ai")) == 0


def test_a_batch_that_overruns_with_nothing_of_a_higher_priority_waiting_runs_on_without_giving_back(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    d = Dispatcher(platform)
    first = d.dispatch("t_record", {"tag": "first"}, priority="low")
    slow = d.dispatch("t_sleep", {"tag": "slow", "seconds": 0.5}, priority="low")
    after = [d.dispatch("t_record", {"tag": f"after-{i}"}, priority="low") for i in range(10)]
    pushed_back = int(r.info("commandstats").get("cmdstat_rpush", {}).get("calls", 0))
    start_worker("ai", "--pool", "solo", env_overrides={"MEETINGTASKS_SOLO_BATCH_MS": "100"})

    wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in [first, slow, *after]),
             message="every task to finish")
    # The slow task overran the budget, but no queue above "low" held anything: the rest ran on from the same
    # fetch instead of going back (a give-back pushes each message back with RPUSH) to be fetched again: the only
    # RPUSHes are the handlers' own (one per t_record, two for t_sleep's records).
    handlers_pushes = 1 + len(after) + 2
    assert int(r.info("commandstats").get("cmdstat_rpush", {}).get("calls", 0)) == pushed_back + handlers_pushes
    starts = [_started_at(h) for h in [first, slow, *after]]
    assert starts == sorted(starts), "run in their order"
    for h in [first, slow, *after]:
        assert _history(h) == [Status.QUEUED, Status.STARTED, Status.SUCCEEDED], h.id
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0, message="every ack applied")


def test_giving_back_returns_only_this_workers_own_deliveries(platform: Platform, r: redis.Redis) -> None:
    from meetingtasks.worker.transport import GIVE_BACK

    keys = [platform.keys.unacked("ai"), platform.keys.unacked_index("ai"), platform.keys.wake("ai")]
    for tag in ("tag-held", "tag-taken", "tag-foreign", "tag-foreign-taken"):
        r.hset(keys[0], tag, "[" + ("\"m-foreign\"" if tag == "tag-foreign" else "{}") + ", \"\", \"ai.low\"]")
        r.zadd(keys[1], {tag: 1.0})
    for task_id, count in (("id-held", 2), ("id-swept", 1), ("id-taken", 2)):
        r.hset(platform.keys.status(task_id), mapping={"status": "QUEUED", "deliveries": count})
    # id-taken: our fetch counted delivery 1; the sweep put it back and another worker's fetch counted delivery 2
    # under the same tag: that worker's unacked entry stays, and the message is not pushed a second time.
    # Fetch order: held first; one whose lease ran out and that the sweep already queued again; one another worker
    # took since; a foreign message (no id, no count) still ours; one re-fetched by another worker (entry rewritten).
    given = GIVE_BACK(r, keys, [platform.keys.status(""), "ai.low", "m-held", "tag-held", "id-held", "2",
                                "ai.low", "m-swept", "tag-swept", "id-swept", "1",
                                "ai.low", "m-taken", "tag-taken", "id-taken", "1",
                                "ai.low", '"m-foreign"', "tag-foreign", "", "0",
                                "ai.low", '"m-foreign-2"', "tag-foreign-taken", "", "0"])
    assert given == 2
    assert r.lrange("ai.low", 0, -1) == [b'"m-foreign"', b"m-held"]  # at the head (RPOP end), in fetch order
    assert sorted(r.hkeys(keys[0])) == [b"tag-foreign-taken", b"tag-taken"]
    assert sorted(r.zrange(keys[1], 0, -1)) == [b"tag-foreign-taken", b"tag-taken"]
    def count(task_id: str) -> bytes | None:
        return r.hget(platform.keys.status(task_id), "deliveries")

    assert count("id-held") == b"1"  # this fetch no longer counts as a delivery
    assert count("id-swept") == b"1"
    assert count("id-taken") == b"2"
    assert r.llen(keys[2]) == 1  # an idle worker is woken for them


def test_two_solo_workers_run_every_task_of_a_batch_held_behind_a_long_task_once(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    # Leases shorter than the long task: the messages fetched behind it stay leased only if the worker renews
    # them too (it holds them, though Celery does not know them yet).
    env = {"MEETINGTASKS_SOLO_BATCH_MS": "100", "MEETINGTASKS_VISIBILITY_TIMEOUT_S": "1.5",
           "MEETINGTASKS_RESTORE_INTERVAL_S": "0.2"}
    d = Dispatcher(platform)
    first = d.dispatch("t_sleep", {"tag": "first"}, priority="low")
    slow = d.dispatch("t_sleep", {"tag": "slow", "seconds": 7}, priority="low")
    # Long enough that the second worker still holds one of them when the first one's batch ends.
    after = [d.dispatch("t_sleep", {"tag": f"after-{i}", "seconds": 0.8}, priority="low") for i in range(10)]
    start_worker("ai", "--pool", "solo", env_overrides=env)
    wait_for(lambda: slow.status() == Status.STARTED, message="the slow task to run")
    assert r.llen("ai.low") == 0, "the first worker fetched the whole batch"
    start_worker("ai", "--pool", "solo", env_overrides=env)  # ready long after the leases would have run out
    wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in [first, slow, *after]), timeout_s=40,
             message="every task to finish")
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0, message="every ack applied")
    time.sleep(1.0)  # a duplicate run would show in test:started
    started = [x.decode().split("|") for x in r.lrange("test:started", 0, -1)]
    assert sorted(tag for tag, _, _ in started) == sorted(["first", "slow", *(f"after-{i}" for i in range(10))]), \
        "each task ran exactly once"
    slow_end = float(r.lrange("test:finished", 0, -1)[0].decode().split("|")[1])
    assert all(float(when) >= slow_end for tag, when, _ in started if tag.startswith("after-")), \
        "the messages held behind the slow task stayed with their worker until it gave them back"
    for h in [first, slow, *after]:
        assert _history(h) == [Status.QUEUED, Status.STARTED, Status.SUCCEEDED], h.id


def test_a_task_that_fails_behind_another_in_a_batch_is_retrying_not_started(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    d = Dispatcher(platform)
    lead = d.dispatch("t_record", {"tag": "lead"}, priority="high")
    flaky = d.dispatch("t_flaky", {"tag": "behind", "fail_times": 1}, priority="normal")
    # Its STARTED is deferred (it sits behind "lead" in one fetch) and must reach Redis before its RETRYING.
    start_worker("ai", "--pool", "solo", env_overrides={"MEETINGTASKS_SOLO_BATCH_MS": "100"})
    wait_for(lambda: flaky.status() == Status.SUCCEEDED and lead.status() == Status.SUCCEEDED,
             message="both tasks to succeed")
    history = _history(flaky)
    assert history[:3] == [Status.QUEUED, Status.STARTED, Status.RETRYING], history
    assert history[-2:] == [Status.STARTED, Status.SUCCEEDED], history


def test_progress_of_a_task_behind_another_in_a_batch_is_recorded(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    from tests.support.dispatcher_tasks import WORKER_ENV

    d = Dispatcher(platform)
    lead = d.dispatch("t_record", {"tag": "lead"}, priority="high")
    # t_progress reports 50% at once: its deferred STARTED must be in Redis first, or the report is refused.
    handle = d.dispatch("t_progress", {"tag": "p-batch"}, priority="normal")
    start_worker("ai", "--pool", "solo", env_overrides={**WORKER_ENV, "MEETINGTASKS_SOLO_BATCH_MS": "100"})
    wait_for(lambda: handle.info().fields.get("progress") == "50.0", message="50% in the record")
    r.set("test:release:p-batch", 1)
    assert handle.wait(20) == "p-batch"
    assert lead.status() == Status.SUCCEEDED
    assert _history(handle) == [Status.QUEUED, Status.STARTED, Status.SUCCEEDED]


def test_a_batch_prefetched_behind_a_long_task_goes_back_while_it_runs(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    from meetingtasks.worker.transport import SOLO_BATCH_MAX

    d = Dispatcher(platform)
    slow = d.dispatch("t_sleep", {"tag": "slow", "seconds": 3}, priority="low")
    after = [d.dispatch("t_record", {"tag": f"after-{i}"}, priority="low") for i in range(3 * SOLO_BATCH_MAX)]
    # The first fetch comes back full (a backlog), so the worker fetches the next batch while the first one runs.
    start_worker("ai", "--pool", "solo")
    wait_for(lambda: slow.status() == Status.STARTED, message="the slow task to run")
    # The batch fetched behind the slow task goes back to its queue while the slow task still runs (the start
    # flusher's thread reads it and gives it back), instead of waiting, leased, for the slow task to end.
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == SOLO_BATCH_MAX
             and r.llen("ai.low") == 2 * SOLO_BATCH_MAX + 1, message="only the running batch leased")
    assert r.llen("test:finished") == 0, "the slow task still runs"
    critical = d.dispatch("t_echo", {"tag": "urgent"}, priority="critical")
    wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in [slow, critical, *after]), timeout_s=30,
             message="every task to finish")
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0, message="every ack applied")
    done = [x.decode() for x in r.lrange("test:done", 0, -1)]
    assert sorted(done) == sorted(f"after-{i}" for i in range(3 * SOLO_BATCH_MAX)), "each task ran exactly once"
    starts = [_started_at(h) for h in after]
    assert _started_at(critical) < min(starts), "the critical task ran before those given back"
    assert starts == sorted(starts), "given back in their order"
    for h in [slow, critical, *after]:
        assert _history(h) == [Status.QUEUED, Status.STARTED, Status.SUCCEEDED], h.id


def test_a_task_cancelled_while_held_in_a_batch_behind_a_running_one_never_runs(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    from tests.support.dispatcher_tasks import WORKER_ENV

    d = Dispatcher(platform)
    lead = d.dispatch("t_progress", {"tag": "lead"}, priority="normal")
    held = d.dispatch("t_record", {"tag": "held"}, priority="low")
    behind = d.dispatch("t_record", {"tag": "behind"}, priority="low")
    start_worker("ai", "--pool", "solo", env_overrides={**WORKER_ENV, "MEETINGTASKS_SOLO_BATCH_MS": "100"})
    wait_for(lambda: lead.info().fields.get("progress") == "50.0", message="the lead task to run")
    # The three came in one fetch: the other two wait in the worker, leased, with their cancel flags read then.
    assert r.hlen(platform.keys.unacked("ai")) == 3
    held.cancel()
    r.set("test:release:lead", 1)
    wait_for(lambda: behind.status() == Status.SUCCEEDED, message="the task behind it to run")
    # Its flag was read again before it would have started: skipped, not run.
    assert held.status() == Status.CANCELLED
    assert [x.decode() for x in r.lrange("test:done", 0, -1)] == ["behind"]
    wait_for(lambda: r.hlen(platform.keys.unacked("ai")) == 0, message="every ack applied")


def test_a_quick_task_between_slow_ones_does_not_size_the_next_fetch_for_many_slow_ones(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    # Given a solo worker draining low tasks of 30 ms under a 40 ms budget: each batch is sized to half the budget
    # by how long its tasks took, so it fetches them one at a time
    d = Dispatcher(platform)
    slow = [d.dispatch("t_sleep", {"tag": f"slow-{i}", "seconds": 0.03}, priority="low") for i in range(30)]
    start_worker("ai", "--pool", "solo", env_overrides={"MEETINGTASKS_SOLO_BATCH_MS": "40"})
    wait_for(lambda: r.llen("test:finished") >= 4, message="the first slow tasks to run")
    # When a quick critical task runs between them (well under a millisecond)
    critical = d.dispatch("t_echo", {"tag": "quick"}, priority="critical")
    wait_for(lambda: critical.status() == Status.SUCCEEDED, message="the critical task to run")
    # Then the fetches after it still take the slow tasks one at a time: a batch sized by the quick task alone
    # would hold dozens of them leased (out of reach of any other worker, and ahead of the next critical task)
    unacked = platform.keys.unacked("ai")
    held = [r.hlen(unacked)]
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        held.append(r.hlen(unacked))
        time.sleep(0.002)
    assert max(held) <= 2, f"up to {max(held)} slow tasks held at once after a quick one"
    wait_for(lambda: all(h.status() == Status.SUCCEEDED for h in slow), message="every slow task to run")
