"""Beat: pumps the delayed sets without any worker's help, survives SIGKILL, fires each periodic entry once."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from celery.schedules import crontab

from beat.schedule import Periodic, _added, beat_schedule, periodic
from meetingtasks import dispatch
from meetingtasks.core.settings import Settings
from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.operations.embedded import RedisServer, free_port
from meetingtasks.store.platform import Platform
from meetingtasks.worker.maintenance import read_queue_depths
from tests.support.beat_process import BeatProcess, beat_factory
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

# A worker whose own pump never runs during a test: what moves delayed tasks is beat.
NO_WORKER_PUMP = {"MEETINGTASKS_PUMP_INTERVAL_S": "3600"}
TICKS = {"MEETINGTASKS_INCLUDE": "tests.support.tasks,tests.support.scheduling_tasks"}


@pytest.fixture
def start_beat(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., BeatProcess]]:
    yield from beat_factory(env, tmp_path)


def run_times(r: redis.Redis, kind: str, tag_prefix: str) -> list[float]:
    rows = [x.decode().split("|") for x in r.lrange(f"test:{kind}", 0, -1)]
    return sorted(float(row[1]) for row in rows if row[0].startswith(tag_prefix))


@pytest.mark.slow
def test_beat_killed_and_restarted_moves_what_fell_due_meanwhile(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess],
    start_beat: Callable[..., BeatProcess],
) -> None:
    # given a worker that does not pump, and beat pumping for it
    start_worker("ai", env_overrides=NO_WORKER_PUMP)
    first = start_beat()
    before = [dispatch("t_echo", {"tag": f"before-{i}"}, delay=0.5) for i in range(5)]
    for handle in before:
        handle.wait(timeout=30)
    # when beat is killed and twenty tasks fall due while it is down
    first.kill()
    during = [dispatch("t_echo", {"tag": f"during-{i}"}, delay=0.2 + i * 0.05) for i in range(20)]
    last_due = time_due(platform, r)
    wait_for(lambda: time.time() > last_due + 0.5, 20, message="every entry to fall due")
    assert platform.delayed.count(r, "ai") == 20  # nothing else pumps them
    assert run_times(r, "runs", "during-") == []
    # and beat is started again
    restarted_at = time.time()
    start_beat()
    # then they all run promptly, each once
    wait_for(lambda: len(run_times(r, "runs", "during-")) >= 20, 20, message="the twenty tasks to run")
    assert max(run_times(r, "runs", "during-")) - restarted_at < 10
    for i, handle in enumerate(during):
        assert handle.wait(timeout=10) == {"tag": f"during-{i}"}
    dispatch("t_echo", {"tag": "marker"}, delay=0.5).wait(timeout=30)
    assert len(run_times(r, "runs", "during-")) == 20
    assert platform.delayed.count(r, "ai") == 0


def time_due(platform: Platform, r: redis.Redis) -> float:
    """The latest due time in ai's delayed sets (epoch seconds)."""
    latest = 0.0
    for prio in ("critical", "high", "normal", "low"):
        top = r.zrange(platform.keys.delayed("ai", prio), -1, -1, withscores=True)
        if top:
            latest = max(latest, top[0][1] / 1000)
    return latest


@pytest.mark.slow
def test_two_beats_racing_over_10000_due_entries_queue_each_exactly_once(
    platform: Platform, r: redis.Redis, start_beat: Callable[..., BeatProcess]
) -> None:
    # given two beat processes pumping in small batches, and no worker
    small_batches = {"MEETINGTASKS_PUMP_BATCH": "100"}
    start_beat(env_overrides=small_batches)
    start_beat(env_overrides=small_batches)
    # when 10,000 delayed tasks fall due
    dispatcher = Dispatcher(platform)
    tasks = [dispatcher.prepare("t_echo", {"tag": str(i)}, delay=1.0) for i in range(10_000)]
    with r.pipeline(transaction=False) as pipe:
        for task in tasks:
            dispatcher.enqueue(pipe, task)
        pipe.execute()
    wait_for(lambda: platform.delayed.count(r, "ai") == 0, 60, message="the delayed set to drain")
    # then each is on its queue exactly once and marked QUEUED
    queued_ids = [json.loads(m)["headers"]["id"] for m in r.lrange("ai.normal", 0, -1)]
    assert len(queued_ids) == 10_000
    assert set(queued_ids) == {t.task_id for t in tasks}
    with r.pipeline(transaction=False) as pipe:
        for task in tasks:
            pipe.hget(platform.keys.status(task.task_id), "status")
        assert set(pipe.execute()) == {b"QUEUED"}


@pytest.mark.slow
def test_only_the_lock_holder_fires_periodic_entries_and_a_standby_takes_over(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess],
    start_beat: Callable[..., BeatProcess],
) -> None:
    # given a worker for the ticks and two beats with a one-second entry; the first holds the lock
    start_worker("ai", env_overrides=TICKS)
    ha = {**TICKS, "MEETINGTASKS_BEAT_LOCK_TIMEOUT_S": "3"}
    holder = start_beat("--include", "tests.support.beat_entries", env_overrides=ha).wait_log("Acquired lock")
    standby = start_beat("--include", "tests.support.beat_entries", env_overrides=ha)
    # when it ticks for a while
    wait_for(lambda: len(run_times(r, "ticks", "tick")) >= 4, 30, message="four ticks")
    # then only the holder fires, once a second, never twice for one period
    assert not standby.holds_lock()
    assert "Sending due task test-tick" not in standby.log()
    ticks = run_times(r, "ticks", "tick")
    assert min(b - a for a, b in itertools.pairwise(ticks)) > 0.5, ticks
    # when the holder is killed, the standby takes the lock over and the ticks go on, still once a period
    holder.kill()
    killed_at = time.time()
    standby.wait_log("Acquired lock", timeout_s=20)
    wait_for(lambda: len([t for t in run_times(r, "ticks", "tick") if t > killed_at]) >= 3, 30,
             message="three ticks after the takeover")
    ticks = run_times(r, "ticks", "tick")
    assert min(b - a for a, b in itertools.pairwise(ticks)) > 0.5, ticks
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 3 + 1 + 3, ticks  # lock timeout + tick + slack


@pytest.mark.slow
def test_celery_beat_runs_the_same_app_and_maintenance_refreshes_queue_depths(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess],
    start_beat: Callable[..., BeatProcess],
) -> None:
    # given a user worker (maintenance runs there) and `celery -A beat beat` with a 1 s depth refresh
    start_worker("user")
    beat = start_beat(celery_cli=True, env_overrides={"MEETINGTASKS_QUEUE_DEPTHS_INTERVAL_S": "1"})
    beat.wait_log("Acquired lock")
    # when tasks wait on ai's queues
    dispatch("t_echo", {"tag": "waiting"}, priority="critical")
    dispatch("t_echo", {"tag": "later"}, delay=600)
    # then a snapshot with them appears, refreshed by the periodic maintenance task
    def snapshot_has_them() -> bool:
        snap = read_queue_depths(platform)
        rows = {(row["service"], row["priority"]): row for row in (snap or {}).get("rows", [])}
        return bool(rows) and rows[("ai", "critical")]["queued"] == 1 and rows[("ai", "normal")]["scheduled"] == 1
    wait_for(snapshot_has_them, 30, message="a queue-depth snapshot with the ai tasks")
    snap = read_queue_depths(platform)
    assert snap is not None and time.time() - snap["time"] < 10
    assert len(snap["rows"]) >= 20  # five services x four priorities
    # and the pump of the celery-started beat moves delayed work too
    soon = dispatch("t_echo", {"tag": "soon"}, delay=0.3)
    wait_for(lambda: soon.status().value == "QUEUED", 10, message="the pump of `celery -A beat beat`")


def test_schedule_entries_take_an_interval_or_a_crontab(settings: Settings) -> None:
    every = Periodic("e", "t_echo", every_s=5, payload={"tag": "x"}, priority="low").celery_entry()
    assert every == {"task": "t_echo", "schedule": timedelta(seconds=5), "kwargs": {"tag": "x"},
                     "options": {"priority": "low"}}
    nightly = Periodic("n", "t_echo", crontab="30 3 * * *").celery_entry()
    assert nightly["schedule"] == crontab("30", "3", "*", "*", "*")
    with pytest.raises(ValueError, match="exactly one of every_s or crontab"):
        Periodic("bad", "t_echo")
    with pytest.raises(ValueError, match="5 fields"):
        Periodic("bad", "t_echo", crontab="* *")
    with pytest.raises(ValueError, match="unknown priority"):
        Periodic("bad", "t_echo", every_s=1, priority="urgent")
    schedule = beat_schedule(settings)
    assert schedule["queue-depths"]["task"] == "maintenance_queue_depths"
    assert schedule["trim-streams"]["task"] == "maintenance_trim_streams"
    periodic("unit-test-entry", "t_echo", every_s=2)
    try:
        assert beat_schedule(settings)["unit-test-entry"]["schedule"] == timedelta(seconds=2)
    finally:
        _added.pop("unit-test-entry")


@pytest.mark.slow
def test_beat_started_while_redis_is_down_waits_for_it_and_stops_on_sigterm(
    env: dict[str, str], tmp_path: Path, start_beat: Callable[..., BeatProcess]
) -> None:
    # given a Redis that is not up yet, and beat started against it
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    beat = start_beat(env_overrides={"MEETINGTASKS_REDIS_URL": url})
    beat.wait_log("Redis unavailable")
    # when Redis comes up
    server = RedisServer(tmp_path / "late-redis", port=port).start()
    try:
        # then beat takes its lock and pumps without a restart
        beat.wait_log("Acquired lock", timeout_s=20)
        late = Platform(Settings(redis_url=url))
        handle = Dispatcher(late).dispatch("t_echo", {"tag": "late"}, delay=0.2)
        wait_for(lambda: handle.status().value == "QUEUED", 10, message="the pump after the outage")
        # and SIGTERM ends it, releasing the lock for the next beat
        beat.stop()
        assert beat.proc.returncode == 0
        assert late.redis().get(late.keys.beat_prefix + ":lock") is None
    finally:
        server.stop()
