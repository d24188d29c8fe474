"""Start-up: from a worker process's start to the run of the task that was waiting for it, ours against stock
Celery's solo worker (an autoscaler that starts workers on a backlog pays this on every start).

One ``bench_mark`` / ``mark`` task is queued before the worker starts; the task records ``time.time()`` in Redis
when it runs, and the figure is that minus the time just before ``Popen``. Rounds are interleaved (ours, stock,
...), each side after one untimed start that warms the page cache.

Two figures: the process environment as given (with ``PYTHONDONTWRITEBYTECODE=1``, as on the benchmark VMs and in
our Dockerfile, our sources are compiled at every start while stock Celery's installed bytecode is read), and
both sides with bytecode cached (a private ``PYTHONPYCACHEPREFIX``, filled by the warm-up start), as an installed
package runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from bench.harness import Worker, our_worker, stock_worker, wait_until

if TYPE_CHECKING:
    from bench.run import Bench

KEY = "bench:startup"


def startup(bench: Bench) -> None:
    cached = str(bench.tmp / "pycache")
    for label, overrides in (("", {}), (", bytecode cached", {"PYTHONPYCACHEPREFIX": cached})):
        fig = bench.figure(f"start-up: process start to first task run{label}", "s", higher_is_better=False,
                           target="<= 1.0 s")
        ours_env = _env(bench.env, overrides)
        stock_env = _env(bench.stock_env, overrides)

        def ours(env: dict[str, str] = ours_env) -> Worker:
            return our_worker(env, bench.log("startup-ours"))

        def stock(env: dict[str, str] = stock_env) -> Worker:
            return stock_worker(env, bench.log("startup-stock"))

        for warm_up in (True, *([False] * bench.rounds)):
            ours_s = _first_run(bench, _queue_ours, ours)
            stock_s = _first_run(bench, lambda: bench.stock.mark.delay(0.0, 0.0, KEY), stock)
            if not warm_up:
                fig.ours.append(ours_s)
                fig.stock.append(stock_s)


def _env(env: dict[str, str], overrides: dict[str, str]) -> dict[str, str]:
    if not overrides:
        return env
    out = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out.update(overrides)
    return out


def _queue_ours() -> None:
    from meetingtasks import dispatch

    dispatch("bench_mark", {"sent_at": 0.0, "key": KEY})


def _first_run(bench: Bench, queue: Callable[[], object], start: Callable[[], Worker]) -> float:
    """Seconds from just before the worker's ``Popen`` to the start of the task queued before it."""
    bench.reset()
    queue()
    t0 = time.time()
    worker = start()
    try:
        wait_until(lambda: int(bench.client.llen(KEY)) >= 1, 60, "the first task to run", 0.002)
    finally:
        worker.stop()
    raw = bench.client.lindex(KEY, 0)
    assert raw is not None
    _, started = raw.decode().split("|")
    return float(started) - t0
