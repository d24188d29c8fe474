"""Celery's task events (Flower's view) are sent while a monitor receives them, and only then; a monitor that
subscribes sees every task fetched after it did, from its task-received on (meetingtasks.worker.task_events)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from meetingtasks import dispatch, dispatch_batch
from meetingtasks.store.platform import Platform
from meetingtasks.worker.consumer import EVENT_FLUSH_INTERVAL_S
from meetingtasks.worker.transport import FETCH
from tests.support.waiting import wait_for
from tests.support.watching import Monitor, TaskEventReceiver
from tests.support.workers import WorkerProcess

# Slow tier: worker subprocesses of every pool.
pytestmark = pytest.mark.slow

POOLS = [("--pool", "solo"), ("--pool", "prefork", "--concurrency", "1"), ("--pool", "threads", "--concurrency", "2")]


def task_event_batches(monitor: Monitor) -> list[dict[str, Any]]:
    """The batches of task events the worker published (not the fetch script's empty probes, which run as Lua)."""
    return [c for c in monitor.parsed()
            if c["command"].startswith("PUBLISH") and "celeryev/task.multi" in c["command"]
            and c.get("client_type") != "lua"]


def run_echoes(n: int, tag: str) -> None:
    """Run ``n`` tasks, then wait out the worker's event flush (so a watch around this sees their batch, if any:
    asserting an absence needs a window, not a poll)."""
    handles = dispatch_batch([("t_echo", {"tag": f"{tag}-{i}"}) for i in range(n)]).handles
    for handle in handles:
        handle.wait(timeout=30)
    time.sleep(3 * EVENT_FLUSH_INTERVAL_S)


@pytest.mark.parametrize("pool", POOLS, ids=lambda args: args[1])
def test_task_events_follow_the_monitors_that_receive_them(
        platform: Platform, r: redis.Redis, redis_url: str, start_worker: Callable[..., WorkerProcess],
        pool: tuple[str, ...]) -> None:
    # Given a worker and no monitor: its heartbeat reaches nobody, and neither would its task events
    start_worker("ai", *pool)
    run_echoes(3, "warm-up")  # (the first batch may go out before the worker learns nobody listens)
    # When tasks run with nobody subscribed to task events, for longer than a worker heartbeat's interval (its
    # heartbeats reach the workers' gossip, which subscribes to worker events only), then none are published
    with Monitor(redis_url) as monitor:
        until = time.monotonic() + 2.5
        while time.monotonic() < until:
            run_echoes(5, "unwatched")
    assert any("celeryev/worker.heartbeat" in c["command"] for c in monitor.parsed())
    assert task_event_batches(monitor) == []
    # When a monitor subscribes and a task is dispatched at once
    with TaskEventReceiver(platform, r) as events:
        handle = dispatch("t_echo", {"tag": "watched"})
        handle.wait(timeout=30)
        # Then the monitor sees the task from its task-received on
        seen = wait_for(lambda: (kinds := [e["type"] for e in events if e.get("uuid") == handle.id])
                        and "task-succeeded" in kinds and kinds, 20, message="the task's events")
        assert seen == ["task-received", "task-started", "task-succeeded"]
    # When the monitor has gone: the next batch reaches nobody, and the worker stops sending them
    run_echoes(3, "after")
    wait_for(lambda: _quiet_after(redis_url), 30, interval_s=0.5, message="task events to stop")


def _quiet_after(redis_url: str) -> bool:
    with Monitor(redis_url) as monitor:
        run_echoes(5, "check")
    return task_event_batches(monitor) == []


@pytest.mark.parametrize("pool", POOLS, ids=lambda args: args[1])
def test_an_idle_worker_whose_fetches_probe_for_monitors_still_waits(
        platform: Platform, redis_url: str, start_worker: Callable[..., WorkerProcess], pool: tuple[str, ...]) -> None:
    # Given a worker with nobody receiving its events (its fetches carry the probe), after some work
    start_worker("ai", *pool)
    run_echoes(3, "before")
    # When it has nothing to do for a second
    with Monitor(redis_url) as monitor:
        time.sleep(1.0)
    # Then it waits for a wake token instead of fetching again and again (a fetch per wait timeout at most)
    fetches = [c for c in monitor.parsed() if c["command"].startswith(f"EVALSHA {FETCH.sha}")]
    assert len(fetches) <= 5, len(fetches)


def test_a_forked_pool_child_sends_its_task_events_whoever_listens() -> None:
    # Given a process whose last publish reached nobody (its task events stopped)
    import multiprocessing

    from meetingtasks.worker.task_events import LISTENERS

    LISTENERS.heard(0)
    try:
        assert not LISTENERS.present
        # When it forks a pool child (which never fetches, so could never probe its way back)
        ctx = multiprocessing.get_context("fork")
        answers = ctx.Queue()

        def child() -> None:
            LISTENERS.heard(0)  # even a publish of its own that reached nobody
            answers.put(LISTENERS.present)

        proc = ctx.Process(target=child)
        proc.start()
        proc.join(30)
        # Then the child sends its task events as Celery does, and the parent goes on tracking
        assert answers.get(timeout=10) is True
        assert not LISTENERS.present
    finally:
        LISTENERS.heard(1)


def test_fetches_probe_for_monitors_at_most_every_probe_interval() -> None:
    from meetingtasks.worker.task_events import LISTENERS, PROBE_INTERVAL_S

    listeners = type(LISTENERS)()
    listeners.exchange = "celeryev"
    message = {"body": "e30=", "content-type": "application/json", "headers": {},
               "properties": {"body_encoding": "base64", "delivery_info": {"routing_key": "worker.heartbeat"}}}
    listeners.learn("celeryev", message, "/0.celeryev/task.multi", lambda body, encoding: (body, None))
    assert listeners.probe() is None  # task events on: nothing to ask
    # Given task events stopped
    listeners.heard(0)
    first = listeners.probe()
    assert first is not None and first[0] == "/0.celeryev/task.multi" and b'"body":"[]"' in first[1]
    asked_at = time.monotonic()
    # Then the next fetches do not ask again until the interval has passed
    assert listeners.probe() is None
    wait_for(lambda: listeners.probe() is not None, 5, interval_s=0.005, message="the next probe")
    assert time.monotonic() - asked_at >= PROBE_INTERVAL_S
