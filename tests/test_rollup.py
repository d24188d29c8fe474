"""The one record of task traffic (meetingtasks.store.rollup): a real worker's load fills both views, `top`'s per
type and the console's per service and priority, with no exporter running and no Redis command per task."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from meetingtasks import dispatch_batch
from meetingtasks.store.platform import Platform
from meetingtasks.store.rollup import read_series, top_report
from meetingtasks.store.status import Status
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

N = 300


def _chart_counts(platform: Platform, r: redis.Redis, field: str) -> int:
    return sum(int(r.hget(key, field) or 0) for key in r.scan_iter(f"{platform.keys.prefix}rollup:*"))


def _calls(r: redis.Redis, *commands: str) -> int:
    stats = r.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in commands)


@pytest.mark.slow
@pytest.mark.parametrize("pool", [("--pool", "prefork", "--concurrency", "1"), ("--pool", "solo"),
                                  ("--pool", "threads", "--concurrency", "4")], ids=["prefork", "solo", "threads"])
def test_a_workers_load_fills_top_and_the_charts_without_an_exporter_and_no_command_per_task(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess], pool: tuple[str, ...],
) -> None:
    # Given N tasks queued at two priorities before a worker starts, and no exporter anywhere
    handles = dispatch_batch([{"type": "t_echo", "payload": {"tag": f"r{i}"}, "priority": "high" if i % 3 else "low"}
                              for i in range(N)])
    counted_before = _calls(r, "hincrby", "hsetnx")
    # When the worker drains them
    start_worker("ai", *pool)
    for handle in handles:
        handle.wait(timeout=120)
    # Then `top` and the charts count every run once, per type and per service and priority (also a STARTED that a
    # reserve's task recorded itself and that went to Redis with its outcome, written as one)
    def recorded() -> bool:
        minute = top_report(platform)["minute"]["types"].get("t_echo", {})
        return minute.get("succeeded") == N and _chart_counts(platform, r, "ai|high|succeeded") == N * 2 // 3
    wait_for(recorded, 30, message="the load in both views")
    minute = top_report(platform)["minute"]["types"]["t_echo"]
    assert (minute["started"], minute["succeeded"], minute["failed"]) == (N, N, 0), minute
    assert _chart_counts(platform, r, "ai|high|started") == N * 2 // 3
    assert _chart_counts(platform, r, "ai|low|started") == _chart_counts(platform, r, "ai|low|succeeded") == N // 3
    series = read_series(platform)
    assert series.recorded and any(series.charts["started"]["ai"]) and not r.exists(platform.keys.rollup_writer)
    # And the counts cost far less than a command per task: a busy worker's fetches hand them back and one call a
    # second writes them
    per_task = (_calls(r, "hincrby", "hsetnx") - counted_before) / N
    print(f"\ncounting commands (HINCRBY + HSETNX) per task, {pool[1]}: {per_task:.3f}")  # the figure in docs/tools.md
    assert per_task < 1 / 3


@pytest.mark.slow
@pytest.mark.parametrize("pool", [("--pool", "solo"), ("--pool", "prefork", "--concurrency", "1"),
                                  ("--pool", "threads", "--concurrency", "2")], ids=["solo", "prefork", "threads"])
def test_a_long_tasks_start_shows_while_it_runs(platform: Platform, start_worker: Callable[..., WorkerProcess],
                                                pool: tuple[str, ...]) -> None:
    # Given a worker busy with one long task (a solo worker fetches nothing until it ends)
    start_worker("ai", *pool)
    handle = dispatch_batch([{"type": "t_sleep", "payload": {"tag": "long", "seconds": 20}}])[0]
    # Then `top` shows its start while it runs (the counts writer's timer writes what no fetch carried)
    wait_for(lambda: top_report(platform)["minute"]["types"].get("t_sleep", {}).get("started") == 1, 15,
             message="the long task's start in top")
    assert handle.status() is Status.STARTED
