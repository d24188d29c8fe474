"""Dispatch throughput into Redis from one process: ``dispatch_batch`` of 10,000 tasks, and a loop of single
``dispatch`` calls. Starts its own redis-server (AOF everysec, loopback). Target: batch >= 30,000 tasks/s.

    python -m bench.dispatch [--tasks 10000] [--rounds 5] [--single 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from meetingtasks.core.settings import Settings
from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.operations.embedded import RedisServer
from meetingtasks.store.platform import Platform

TASK_TYPE = "speech_recognition"


def payload(n: int) -> dict[str, object]:
    return {"meeting_id": f"m-{n % 50}", "audio_ref": f"s3://recordings/m-{n % 50}/chunk-{n}.wav",
            "language": "en-US"}


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):,.0f} (min {min(values):,.0f} - max {max(values):,.0f})"


def run(tasks: int, rounds: int, single: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            platform = Platform(Settings(redis_url=server.url))
            dispatcher = Dispatcher(platform)
            client = platform.redis()
            items = [(TASK_TYPE, payload(n)) for n in range(tasks)]
            dispatcher.dispatch_batch(items[:100])  # warm up: imports, script cache, connection
            client.flushall()

            batch_rates = []
            for _ in range(rounds):
                start = time.perf_counter()
                dispatcher.dispatch_batch(items)
                elapsed = time.perf_counter() - start
                batch_rates.append(tasks / elapsed)
                queued = sum(int(client.llen(f"ai.{p}")) for p in ("critical", "high", "normal", "low"))
                assert queued == tasks, f"expected {tasks} queued, found {queued}"
                client.flushall()

            single_rates = []
            for _ in range(rounds):
                start = time.perf_counter()
                for n in range(single):
                    dispatcher.dispatch(TASK_TYPE, payload(n))
                single_rates.append(single / (time.perf_counter() - start))
                client.flushall()
        finally:
            server.stop()
    print(f"dispatch_batch of {tasks:,} tasks, {rounds} rounds: {summary(batch_rates)} tasks/s")
    print(f"single dispatch loop of {single:,} tasks, {rounds} rounds: {summary(single_rates)} tasks/s")
    ok = statistics.median(batch_rates) >= 30_000
    print(f"target dispatch_batch >= 30,000 tasks/s: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--single", type=int, default=2_000)
    args = parser.parse_args(argv)
    return run(args.tasks, args.rounds, args.single)


if __name__ == "__main__":
    sys.exit(main())
