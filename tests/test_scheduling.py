"""Delayed work: delays and retries longer than the visibility timeout run once, the pump is exact and ordered."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest
import redis

from meetingtasks import dispatch
from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.store.connections import new_client
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status
from tests.support.processes import ROOT
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess


def run_times(r: redis.Redis, kind: str, tag: str) -> list[float]:
    rows = [x.decode().split("|") for x in r.lrange(f"test:{kind}", 0, -1)]
    return [float(row[1]) for row in rows if row[0] == tag]


def statuses(platform: Platform, task_id: str) -> list[str]:
    record = Dispatcher(platform).record(task_id)
    return [s.value for s, _, _ in record.history]


@pytest.mark.slow
def test_delay_longer_than_the_visibility_timeout_runs_once_and_not_before_it_is_due(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    # given a worker whose broker redelivers anything unacked for 1 s
    start_worker("ai", env_overrides={"MEETINGTASKS_VISIBILITY_TIMEOUT_S": "1"})
    # when a task is dispatched with a 3 s delay
    before = time.time()
    handle = dispatch("t_echo", {"tag": "late"}, delay=3)
    due = before + 3
    assert handle.status() is Status.SCHEDULED
    assert handle.wait(timeout=30) == {"tag": "late"}
    # then it ran once, not before it was due
    runs = run_times(r, "runs", "late")
    assert len(runs) == 1 and runs[0] >= due - 0.002, (runs, due)
    assert statuses(platform, handle.id) == ["SCHEDULED", "QUEUED", "STARTED", "SUCCEEDED"]
    # and it does not come back: a later delayed task (2 s = two visibility timeouts) runs, the first does not
    dispatch("t_echo", {"tag": "marker"}, delay=2).wait(timeout=30)
    assert len(run_times(r, "runs", "late")) == 1


@pytest.mark.slow
def test_retry_backoff_longer_than_the_visibility_timeout_runs_once_per_attempt(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    # given a 1 s visibility timeout and a type that fails once and then waits 5 s before its retry
    start_worker("ai", env_overrides={"MEETINGTASKS_VISIBILITY_TIMEOUT_S": "1"})
    handle = dispatch("t_slow_backoff", {"tag": "slow", "fail_times": 1})
    # when it runs to the end
    assert handle.wait(timeout=40) == "ok"
    # then there were exactly two attempts, 5 s or more apart
    attempts = run_times(r, "attempts", "slow")
    assert len(attempts) == 2, attempts
    assert attempts[1] - attempts[0] >= 5.0, attempts
    assert statuses(platform, handle.id) == ["QUEUED", "STARTED", "RETRYING", "STARTED", "SUCCEEDED"]
    dispatch("t_echo", {"tag": "marker"}, delay=2).wait(timeout=30)
    assert len(run_times(r, "attempts", "slow")) == 2


def test_pump_moves_critical_first_marks_queued_and_publishes_the_identity(platform: Platform,
                                                                            r: redis.Redis) -> None:
    # given three delayed tasks of different priorities and a listener on the status channel (no worker runs)
    ids = {p: dispatch("t_echo", {"tag": p}, priority=p, delay=60).id for p in ("low", "normal", "critical")}
    pubsub = r.pubsub()
    pubsub.subscribe(platform.keys.status_channel)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    later = time.time() + 120
    # when a pump with room for one entry runs at a time they are all due
    assert platform.delayed.pump(r, "ai", limit=1, now_s=later) == 1
    # then the critical one moved first
    assert r.llen("ai.critical") == 1 and r.llen("ai.normal") == 0 and r.llen("ai.low") == 0
    event = json.loads(pubsub.get_message(timeout=5)["data"])  # type: ignore[index]
    assert event["id"] == ids["critical"] and event["status"] == "QUEUED"
    assert (event["type"], event["service"], event["priority"], event["attempt"]) == ("t_echo", "ai", "critical", 1)
    assert Dispatcher(platform).record(ids["critical"]).status is Status.QUEUED
    # and the rest follow, each once
    assert platform.delayed.pump(r, "ai", now_s=later) == 2
    assert r.llen("ai.normal") == 1 and r.llen("ai.low") == 1
    assert platform.delayed.count(r, "ai") == 0
    pubsub.close()


@pytest.mark.slow
def test_four_pumps_racing_over_10000_due_entries_queue_each_exactly_once(platform: Platform,
                                                                           r: redis.Redis) -> None:
    # given 10,000 delayed tasks that fall due together
    dispatcher = Dispatcher(platform)
    tasks = [dispatcher.prepare("t_echo", {"tag": str(i)}, delay=1.0) for i in range(10_000)]
    with r.pipeline(transaction=False) as pipe:
        for task in tasks:
            dispatcher.enqueue(pipe, task)
        pipe.execute()
    wait_for(lambda: time.time() > max(t.due_s or 0 for t in tasks) + 0.01, 10, message="the entries to fall due")

    # when four pumps, each with its own connection, race in small batches
    def pump_until_empty() -> None:
        client = new_client(platform.settings.broker_url("ai"), platform.settings)
        while platform.delayed.pump(client, "ai", limit=100) > 0:
            pass
        client.close()

    threads = [threading.Thread(target=pump_until_empty) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    # then every task is on its queue exactly once, and marked QUEUED
    queued_ids = [json.loads(m)["headers"]["id"] for m in r.lrange("ai.normal", 0, -1)]
    assert len(queued_ids) == 10_000
    assert set(queued_ids) == {t.task_id for t in tasks}
    assert platform.delayed.count(r, "ai") == 0
    with r.pipeline(transaction=False) as pipe:
        for task in tasks:
            pipe.hget(platform.keys.status(task.task_id), "status")
        assert set(pipe.execute()) == {b"QUEUED"}


def test_a_delay_longer_than_the_status_ttl_keeps_its_status_record(platform: Platform, r: redis.Redis) -> None:
    # given the status TTL (7 days by default) and a task due in 14 days
    ttl_s = platform.settings.status_ttl_s
    handle = dispatch("t_echo", {"tag": "far"}, delay=2 * ttl_s)
    # then its status record outlives the delay, so status and cancel keep working until it runs
    assert r.ttl(platform.keys.status(handle.id)) > 2 * ttl_s
    assert handle.status() is Status.SCHEDULED


def test_stats_counts_scheduled_tasks_per_service_and_priority(platform: Platform, env: dict[str, str]) -> None:
    # given delayed tasks on two services
    dispatch("t_echo", {"tag": "a"}, priority="critical", delay=60)
    dispatch("t_echo", {"tag": "b"}, priority="critical", delay=60)
    dispatch("t_echo", {"tag": "c"}, priority="low", delay=60)
    dispatch("maintenance_queue_depths", {}, delay=60)
    # when `meetingtasks stats --json` runs
    out = subprocess.run([sys.executable, "-m", "meetingtasks.cli", "stats", "--json"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = {(row["service"], row["priority"]): row["scheduled"] for row in json.loads(out.stdout)}
    # then each is counted under its service and priority
    assert rows[("ai", "critical")] == 2 and rows[("ai", "low")] == 1 and rows[("ai", "normal")] == 0
    assert rows[("user", "high")] == 1
    assert sum(rows.values()) == 4


def test_pump_events_stay_valid_json_for_odd_ids(platform: Platform, r: redis.Redis) -> None:
    # given a scheduled task whose id (chosen by a foreign producer) needs JSON escaping
    odd_id = 'odd"id\\with\tescapes'
    task = Dispatcher(platform).prepare("t_echo", {"tag": "odd"}, delay=60, task_id=odd_id)
    with r.pipeline(transaction=False) as pipe:
        Dispatcher(platform).enqueue(pipe, task)
        pipe.execute()
    pubsub = r.pubsub()
    pubsub.subscribe(platform.keys.status_channel)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    # when it is pumped
    assert platform.delayed.pump(r, "ai", now_s=time.time() + 120) == 1
    # then its QUEUED event is valid JSON naming it exactly
    event = json.loads(pubsub.get_message(timeout=5)["data"])  # type: ignore[index]
    assert (event["id"], event["status"], event["type"], event["priority"]) == (odd_id, "QUEUED", "t_echo", "normal")
    pubsub.close()
