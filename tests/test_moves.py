"""Moving a waiting task: ``set_priority`` / ``reprioritize`` and ``promote``, on real Redis and real workers."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from meetingtasks import dispatch, dispatch_batch
from meetingtasks.core.errors import MoveRefused, TaskNotFound
from meetingtasks.core.message import loads
from meetingtasks.core.priority import PRIORITY_ORDER, queue_name
from meetingtasks.core.settings import Settings
from meetingtasks.store.moves import _FIND, SCAN_SLICE, set_priority
from meetingtasks.store.platform import Platform, configure
from meetingtasks.store.status import Status
from meetingtasks.worker.transport import FETCH, fetch_args
from tests.support.processes import ROOT
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meetingtasks", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def ids_in(r: redis.Redis, queue: str) -> list[str]:
    return [loads(m)["headers"]["id"] for m in r.lrange(queue, 0, -1)]


def test_a_queued_task_moves_to_the_new_priority_queue_in_one_step(platform: Platform, r: redis.Redis) -> None:
    # Given five low tasks queued
    handles = dispatch_batch([{"type": "t_record", "payload": {"tag": f"low-{i}"}, "priority": "low"}
                              for i in range(5)])
    target = handles[2]
    events = r.pubsub(ignore_subscribe_messages=True)
    events.subscribe(platform.keys.status_channel)
    wait_for(lambda: r.pubsub_numsub(platform.keys.status_channel)[0][1] == 1, message="the subscription")
    # When the middle one is moved to critical
    outcome = target.set_priority("critical")
    # Then it is on the critical queue only, routed there, and the others kept their order
    assert outcome.moved and (outcome.before.value, outcome.after.value) == ("low", "critical")
    assert ids_in(r, "ai.critical") == [target.id]
    assert ids_in(r, "ai.low") == [h.id for h in reversed(handles) if h.id != target.id]
    message = loads(r.lindex("ai.critical", 0))
    assert message["properties"]["delivery_info"]["routing_key"] == "ai.critical"
    assert message["headers"]["mt_priority"] == "critical"
    # And its record shows the new priority, the old one and a history line for the change
    record = target.info()
    assert record.status is Status.QUEUED
    assert (record.fields["priority"], record.fields["queue"], record.fields["previous_priority"]) == (
        "critical", "ai.critical", "low")
    assert [s for s, _, _ in record.history] == [Status.QUEUED, Status.QUEUED]
    # And the change is published like a transition (without a type: it is no newly published task)
    message = wait_for(lambda: events.get_message(timeout=0.1), message="the status event")
    event = loads(message["data"])  # type: ignore[index]
    assert (event["id"], event["status"], event["priority"]) == (target.id, "QUEUED", "critical")
    assert "type" not in event
    events.close()
    # And moving it to where it is changes nothing
    assert not target.set_priority("critical").moved
    assert r.llen("ai.critical") == 1


def test_a_scheduled_task_keeps_its_due_time_at_the_new_priority_and_promote_queues_it_now(
        platform: Platform, r: redis.Redis) -> None:
    # Given a low task due in a minute
    handle = dispatch("t_record", {"tag": "later"}, priority="low", delay=60)
    due = r.zscore(platform.keys.delayed("ai", "low"), handle.id)
    assert due is not None
    # When it is moved to high
    handle.set_priority("high")
    # Then it waits in high's schedule with the same due time, its message routed to ai.high
    assert r.zscore(platform.keys.delayed("ai", "high"), handle.id) == due
    assert r.zscore(platform.keys.delayed("ai", "low"), handle.id) is None
    assert platform.delayed.entry(r, "ai", handle.id)[0] == "ai.high"  # type: ignore[index]
    record = handle.info()
    assert record.status is Status.SCHEDULED and record.fields["priority"] == "high"
    assert r.ttl(platform.keys.status(handle.id)) > platform.settings.status_ttl_s  # lives past its due time
    # When it is promoted
    outcome = handle.promote()
    # Then it is queued now on ai.high, and no longer scheduled
    assert outcome.status is Status.QUEUED
    assert ids_in(r, "ai.high") == [handle.id]
    assert platform.delayed.entry(r, "ai", handle.id) is None
    # And promoting a task that is not scheduled is refused
    with pytest.raises(MoveRefused, match="not scheduled"):
        handle.promote()


def test_a_fetched_or_started_task_is_refused_and_nothing_changes(platform: Platform, r: redis.Redis) -> None:
    # Given two low tasks that a worker's fetch took at once: the first started, the second prefetched (unacked,
    # still QUEUED, run next by that worker)
    first, second = dispatch_batch([{"type": "t_record", "payload": {"tag": t}, "priority": "low"}
                                    for t in ("a", "b")])
    keys = platform.keys
    fetched = FETCH(r, [keys.unacked("ai"), keys.unacked_index("ai"), keys.wake("ai"),
                        *(queue_name("ai", p) for p in PRIORITY_ORDER)], fetch_args(platform, 2, 1, [], []))
    assert len(fetched) == 10
    assert (first.status(), second.status()) == (Status.STARTED, Status.QUEUED)
    # When either is moved, it is refused with the reason
    with pytest.raises(MoveRefused, match="already STARTED"):
        first.set_priority("critical")
    with pytest.raises(MoveRefused, match="already fetched by a worker"):
        second.set_priority("critical")
    # Then both stay leased, in no queue, at low
    assert r.hlen(keys.unacked("ai")) == 2
    assert sum(r.llen(queue_name("ai", p)) for p in PRIORITY_ORDER) == 0
    assert second.info().fields["priority"] == "low"


def test_the_cli_moves_and_refuses_with_one_line(env: dict[str, str], platform: Platform, r: redis.Redis) -> None:
    queued = dispatch("t_record", {"tag": "q"}, priority="low")
    out = run_cli(env, "reprioritize", queued.id, "HIGH")
    assert out.returncode == 0, out.stderr
    assert f"task {queued.id} (QUEUED) moved from low to high" in out.stdout
    assert ids_in(r, "ai.high") == [queued.id]
    # A finished task, an unknown id, a bad priority, a promote of a queued task: exit 1, one line each
    r.hset(platform.keys.status(queued.id), "status", "SUCCEEDED")
    refusals = {
        "already finished (SUCCEEDED)": run_cli(env, "reprioritize", queued.id, "low"),
        "no task with id 'nope'": run_cli(env, "reprioritize", "nope", "low"),
        "unknown priority 'urgent'": run_cli(env, "reprioritize", queued.id, "urgent"),
        "not scheduled": run_cli(env, "promote", dispatch("t_record", {"tag": "p"}).id),
    }
    for expected, result in refusals.items():
        assert result.returncode == 1, (expected, result.stderr)
        assert expected in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr
    assert ids_in(r, "ai.high") == [queued.id]


def test_a_task_deeper_than_the_scan_bound_is_refused(
        settings: Settings, monkeypatch: pytest.MonkeyPatch, r: redis.Redis) -> None:
    monkeypatch.setenv("MEETINGTASKS_REPRIORITIZE_SCAN_MAX", "50")
    platform = configure(Settings())
    handles = dispatch_batch([{"type": "t_record", "payload": {"tag": f"{i}"}, "priority": "low"} for i in range(80)])
    # The oldest task is the 80th from the newest end: past the bound
    with pytest.raises(MoveRefused, match=r"not among the newest 50 entries of ai\.low"):
        handles[0].set_priority("high")
    assert r.llen("ai.low") == 80
    # One within the bound moves
    assert handles[60].set_priority("high").moved
    with pytest.raises(TaskNotFound):
        set_priority(platform, "no-such-task", "high")


@pytest.mark.slow
def test_a_low_task_moved_to_critical_runs_before_the_rest_of_its_backlog(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    # Given a worker busy with a backlog of 200 low tasks, and one more low task queued behind them
    backlog = dispatch_batch([{"type": "t_record", "payload": {"tag": f"low-{i}", "seconds": 0.02},
                               "priority": "low"} for i in range(200)])
    target = dispatch("t_record", {"tag": "target", "seconds": 0.02}, priority="low")
    start_worker("ai", "--pool", "threads", "--concurrency", "1")
    wait_for(lambda: r.llen("test:done") >= 3, timeout_s=60, message="the worker to start on the backlog")
    # When it is moved to critical
    target.set_priority("critical")
    # Then it runs before most of the backlog
    assert target.wait(timeout=60) == "target"
    started_at = {h.id: _started_at(h.info()) for h in backlog}
    target_started = _started_at(target.info())
    after = sum(1 for t in started_at.values() if t is None or t > target_started)
    assert after >= 150, f"only {after} of 200 backlog tasks started after the moved task"


@pytest.mark.slow
def test_a_retrying_task_moves_in_the_schedule_and_promote_runs_it_now(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    # Given a task whose first attempt failed and whose retry waits 5 s
    start_worker("ai", "--pool", "threads", "--concurrency", "1")
    handle = dispatch("t_slow_backoff", {"tag": "r", "fail_times": 1}, priority="low")
    wait_for(lambda: handle.status() is Status.RETRYING, timeout_s=30, message="the first attempt to fail")
    due = platform.delayed.due_time_s(r, "ai", handle.id)
    # When it is moved to critical, then promoted
    handle.set_priority("critical")
    assert r.zscore(platform.keys.delayed("ai", "critical"), handle.id) is not None
    assert platform.delayed.due_time_s(r, "ai", handle.id) == due
    promoted_at = time.time()
    handle.promote()
    # Then the retry runs at once, at critical
    assert handle.wait(timeout=30) == "ok"
    record = handle.info()
    assert record.fields["priority"] == "critical"
    assert due is not None and _started_at(record) is not None
    assert _started_at(record) < due - 1, "the retry waited for its due time"  # type: ignore[operator]
    assert _started_at(record) >= promoted_at - 0.5  # type: ignore[operator]


def _started_at(record: Any) -> float | None:
    times = [t for s, t, _ in record.history if s is Status.STARTED]
    return times[-1] if times else None


@pytest.mark.slow
def test_the_cost_of_finding_a_task_behind_a_hundred_thousand_others(
        platform: Platform, r: redis.Redis) -> None:
    # Given 100,000 low tasks queued, and one more queued after them
    for start in range(0, 100_000, 10_000):
        dispatch_batch([{"type": "t_record", "payload": {"tag": f"{start + i}"}, "priority": "low"}
                        for i in range(10_000)])
    newest = dispatch("t_record", {"tag": "newest"}, priority="low")
    oldest_id = loads(r.lindex("ai.low", -1))["headers"]["id"]
    # When the one queued behind the backlog is moved (found at once: the search starts at the newest end)
    began = time.perf_counter()
    newest.set_priority("critical")
    newest_ms = (time.perf_counter() - began) * 1000
    # And the oldest one (the worst case: the whole queue read, in slices of 10,000 entries)
    began = time.perf_counter()
    set_priority(platform, oldest_id, "critical")
    oldest_ms = (time.perf_counter() - began) * 1000
    # And the longest Redis is held: one slice of the search
    began = time.perf_counter()
    _FIND(r, ["ai.low"], ["no-such-id", 0, SCAN_SLICE])
    slice_ms = (time.perf_counter() - began) * 1000
    # And the move's LREM when the message is the last of 100,000 (here: absent, so every entry is compared)
    began = time.perf_counter()
    r.lrem("ai.low", 1, r.lindex("ai.low", 0) + b" ")  # type: ignore[operator]
    lrem_ms = (time.perf_counter() - began) * 1000
    print(f"\nreprioritize with 100,000 queued: newest {newest_ms:.1f} ms, oldest (full scan) {oldest_ms:.1f} ms, "
          f"one {SCAN_SLICE:,}-entry slice {slice_ms:.1f} ms, an LREM through 100,000 {lrem_ms:.1f} ms")
    # Then both moved, and the costs stay within what docs/tools.md states (generous for a loaded machine)
    assert ids_in(r, "ai.critical") == [newest.id, oldest_id][::-1]
    assert r.llen("ai.low") == 99_999
    assert newest_ms < 500 and oldest_ms < 10_000 and slice_ms < 500 and lrem_ms < 500


@pytest.mark.slow
def test_tasks_moved_back_and_forth_while_a_worker_drains_run_exactly_once(
        platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    # Given 300 low tasks being drained by a worker that prefetches (solo: batches of fetched, unstarted tasks)
    handles = dispatch_batch([{"type": "t_record", "payload": {"tag": f"t{i}", "seconds": 0.005}, "priority": "low"}
                              for i in range(300)])
    start_worker("ai", "--pool", "solo")
    # When tasks keep being moved between priorities as the worker takes them
    moved = refused = 0
    priorities = ["critical", "high", "normal", "low"]
    while r.llen("test:done") < 300:
        for i, handle in enumerate(handles[::7]):
            try:
                handle.set_priority(priorities[(i + moved) % 4])
                moved += 1
            except MoveRefused:
                refused += 1
    # Then every task ran exactly once: none lost between two queues, none run twice
    wait_for(lambda: all(h.status() is Status.SUCCEEDED for h in handles), timeout_s=60, message="every outcome")
    done = sorted(t.decode() for t in r.lrange("test:done", 0, -1))
    assert done == sorted(f"t{i}" for i in range(300))
    assert moved > 0 and refused > 0, (moved, refused)
    assert sum(r.llen(queue_name("ai", p)) for p in PRIORITY_ORDER) == 0
