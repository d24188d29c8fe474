"""Strict priority: a worker drains critical before high before normal before low."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from meetingtasks import dispatch, dispatch_batch
from meetingtasks.store.platform import Platform
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess


def test_critical_tasks_overtake_a_backlog_of_two_thousand_low_tasks(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given a worker busy with 2,000 queued low tasks
    start_worker("ai", "--pool", "threads", "--concurrency", "1")
    dispatch_batch([{"type": "t_record", "payload": {"tag": f"low-{i}"}, "priority": "low"} for i in range(2000)])
    wait_for(lambda: r.llen("test:done") >= 1, message="the worker to start on the backlog")

    # When 20 critical tasks are dispatched afterwards
    for i in range(20):
        dispatch("t_record", {"tag": f"crit-{i}"}, priority="critical")

    # Then all of them finish before the 50th low task does
    wait_for(lambda: sum(1 for t in r.lrange("test:done", 0, -1) if t.startswith(b"crit")) == 20,
             timeout_s=60, message="the critical tasks")
    done = [t.decode() for t in r.lrange("test:done", 0, -1)]
    last_critical = max(i for i, tag in enumerate(done) if tag.startswith("crit"))
    lows_before = sum(1 for tag in done[:last_critical] if tag.startswith("low"))
    assert lows_before < 50, f"{lows_before} low tasks finished before the last critical one"


@pytest.mark.slow
def test_each_priority_level_is_served_in_order(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given tasks of every priority queued while no worker runs
    items = [{"type": "t_record", "payload": {"tag": f"{prio}-{i}"}, "priority": prio}
             for prio in ("low", "normal", "high", "critical") for i in range(10)]
    dispatch_batch(items)
    # When a single-slot worker drains them
    start_worker("ai", "--pool", "threads", "--concurrency", "1")
    wait_for(lambda: r.llen("test:done") == 40, timeout_s=60, message="all 40 tasks")
    # Then they finished level by level
    order = [t.decode().split("-")[0] for t in r.lrange("test:done", 0, -1)]
    assert order == ["critical"] * 10 + ["high"] * 10 + ["normal"] * 10 + ["low"] * 10
