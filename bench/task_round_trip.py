"""How long the drain benchmark's task waits for its own Redis call, alone and inside a worker's drain.

    python -m bench.task_round_trip [--pool solo] [--tasks 20000]

The drain benchmark's counting task is a no-op plus one ``INCR``, and the counting drains run at about half the
rate of the no-op drain (``python -m bench``). This says where that half goes. It times the same ``INCR`` on the
same client two ways:

* **alone**: 5,000 calls from this process against an idle redis-server, polling for the reply as a solo worker
  does (``meetingtasks.store.reply_wait``);
* **in a drain**: inside ``bench_count_timed``, run by one worker of ``--pool`` draining ``--tasks`` queued tasks
  (timed from the worker's first task to its last, as the benchmark's drains are).

The drain's calls share Redis with the worker's own fetch script, which Redis runs as one command while the
batch's tasks would make theirs; the report counts the calls that took over twice the alone median and what they
took.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.harness import DONE_KEY, READY_KEY, ROUND_TRIPS_KEY, our_worker, percentile, redis_server, wait_until
from bench.run import Bench, done

ALONE_CALLS = 5000


def alone_us() -> list[float]:
    """Round trips of the task's INCR from this process with nothing else on Redis (microseconds)."""
    from meetingtasks.store.connections import poll_replies
    from meetingtasks.store.platform import get_platform

    platform = get_platform()
    client = platform.redis()
    poll_replies(platform.reply_wait)
    try:
        for _ in range(500):  # the connection made and the code paths warm
            client.incr("bench:round-trips:alone")
        timings = []
        for _ in range(ALONE_CALLS):
            started = time.perf_counter()
            client.incr("bench:round-trips:alone")
            timings.append((time.perf_counter() - started) * 1e6)
        return timings
    finally:
        poll_replies(None)


def drain_us(bench: Bench, pool: str, tasks: int) -> tuple[float, list[float]]:
    """The drain's rate (tasks/s) and its tasks' INCR round trips (microseconds)."""
    bench.reset()
    bench.client.delete(DONE_KEY, READY_KEY, ROUND_TRIPS_KEY)
    bench._queue_ours(tasks, "bench_count_timed")
    worker = our_worker(bench.env, bench.log(f"round-trip-{pool}"), pool=pool)
    try:
        wait_until(lambda: int(bench.client.get(READY_KEY) or 0) >= 1 and done(bench.client) > 0, 60, "the worker")
        t0, c0 = time.perf_counter(), done(bench.client)
        wait_until(lambda: done(bench.client) >= tasks, 600, "the drain", 0.002)
        rate = (tasks - c0) / (time.perf_counter() - t0)
    finally:
        worker.stop()
    chunks = bench.client.lrange(ROUND_TRIPS_KEY, 0, -1)
    return rate, [float(t) for chunk in chunks for t in chunk.decode().split(",")]


def row(where: str, timings: list[float]) -> str:
    return (f"| {where} | {len(timings):,} | {percentile(timings, 50):.0f} | {percentile(timings, 90):.0f} "
            f"| {percentile(timings, 99):.0f} | {statistics.mean(timings):.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default="solo", choices=["solo", "prefork", "threads"])
    parser.add_argument("--tasks", type=int, default=20_000, help="a multiple of 500 (the task sends its timings "
                        "500 at a time)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as server:
        bench = Bench(server.url, Path(tmp), 1, False)
        bench.reset()
        alone = alone_us()
        rate, drained = drain_us(bench, args.pool, args.tasks)
    if not drained:
        raise SystemExit("the worker sent no timings: is bench.noop_tasks the worker's MEETINGTASKS_INCLUDE?")
    slow_line = 2 * percentile(alone, 50)
    slow = [t for t in drained if t > slow_line]
    per_task_us = 1e6 / rate
    print(f"{args.pool} worker, {args.tasks:,} counting tasks: {rate:,.0f} tasks/s ({per_task_us:.0f} us per task)")
    print("| the task's INCR | calls | p50 us | p90 us | p99 us | mean us |")
    print("|---|---|---|---|---|---|")
    print(row("alone (idle Redis, polled)", alone))
    print(row(f"in the {args.pool} drain", drained))
    print(f"In the drain the INCR took {statistics.mean(drained) / per_task_us:.0%} of each task's time; "
          f"{len(slow) / len(drained):.0%} of the calls took over {slow_line:.0f} us (twice the alone median), "
          f"{statistics.mean(slow) if slow else 0:.0f} us on average, "
          f"{sum(slow) / len(drained):.0f} us per task in all.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
