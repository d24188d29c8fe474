"""The exporter's costs: how fast its status feed counts transitions, and what a scrape costs.

    python -m bench.exporter [--events 200000] [--rounds 5]

1. feed throughput: status events PUBLISHed as fast as one pipelining client can, counted by an
   in-process :class:`meetingtasks.metrics.Exporter`; events/s from the first publish to the last count.
   (A worker fleet publishes a few events per task, so this is the task rate one exporter keeps up with.)
2. scrape latency: GET /metrics with 20 queues holding 50,000 tasks, 2,000 dead letters, 5 worker
   heartbeats and 5 event streams; median of the rounds, and the exposition size.
3. tracing overhead on dispatch: ``tracing.dispatch_headers`` with no trace and no SDK (the default).

Prints medians with min-max. Starts its own redis-server.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import timeit
import urllib.request
from pathlib import Path

import orjson

from bench.harness import redis_server
from meetingtasks.core.priority import PRIORITY_ORDER, queue_name
from meetingtasks.core.settings import Settings
from meetingtasks.metrics import Exporter
from meetingtasks.metrics.heartbeat import Heartbeat, write_heartbeat
from meetingtasks.services import SERVICES
from meetingtasks.store.deadletter import DeadLetter
from meetingtasks.store.platform import Platform


def spread(values: list[float], unit: str, scale: float = 1.0) -> str:
    scaled = [v * scale for v in values]
    return f"{statistics.median(scaled):,.1f} {unit} (min {min(scaled):,.1f}, max {max(scaled):,.1f})"


def publish(url: str, channel: str, events: int) -> None:
    """Runs in its own process, as workers do: the exporter's process only counts."""
    import redis

    client = redis.Redis.from_url(url)
    event = orjson.dumps({"op": "status", "id": "x", "status": "SUCCEEDED", "time": time.time(), "attempt": 1,
                          "type": "t_bench", "service": "ai", "priority": "normal", "run_s": 0.002})
    sent = 0
    while sent < events:
        with client.pipeline(transaction=False) as pipe:
            for _ in range(min(1000, events - sent)):
                pipe.publish(channel, event)
            pipe.execute()
        sent += min(1000, events - sent)


def feed_round(platform: Platform, exporter: Exporter, events: int) -> float:
    import multiprocessing

    counter = exporter.tasks.counters["succeeded"]
    start_count = counter.labels("ai", "t_bench", "normal")._value.get()
    publisher = multiprocessing.get_context("spawn").Process(
        target=publish, args=(platform.settings.broker_url(), platform.keys.status_channel, events))
    publisher.start()
    begin = time.perf_counter()
    publisher.join()
    target = start_count + events
    deadline = time.monotonic() + 120
    while counter.labels("ai", "t_bench", "normal")._value.get() < target and time.monotonic() < deadline:
        time.sleep(0.005)
    return events / (time.perf_counter() - begin)


def fill(platform: Platform) -> None:
    client = platform.redis()
    message = b'{"body":"[[{}],{},{}]","headers":{"task":"t","id":"x"},"properties":{"delivery_tag":"x"}}'
    with client.pipeline(transaction=False) as pipe:
        for svc in SERVICES:
            for prio in PRIORITY_ORDER:
                pipe.lpush(queue_name(svc, prio), *[message] * 2_500)
        for i in range(2_000):
            svc = SERVICES[i % len(SERVICES)]
            platform.dead_letters.add(pipe, DeadLetter(id=f"dl-{i}", service=svc, reason="Bench", error="bench",
                                                       task_type="t", priority="normal", payload={"i": i},
                                                       message="{}"))
        for channel in ("user_events", "meeting_events", "media_events", "ai_events", "signaling_events"):
            pipe.xadd(platform.keys.event_stream(channel), {"event": b"{}"})
        pipe.execute()
    for svc in SERVICES:
        write_heartbeat(client, platform, Heartbeat(svc, f"{svc}@bench", 1, time.time(), time.time(), 10, 0, 2.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as server:
        platform = Platform(Settings(redis_url=server.url))
        exporter = Exporter(platform, host="127.0.0.1", port=0).start()
        try:
            rates = [feed_round(platform, exporter, args.events) for _ in range(args.rounds)]
            print(f"status feed: {spread(rates, 'events/s')} over {args.events:,} events per round")
            fill(platform)
            times: list[float] = []
            size = 0
            for _ in range(max(args.rounds, 20)):
                begin = time.perf_counter()
                with urllib.request.urlopen(exporter.url, timeout=30) as response:
                    size = len(response.read())
                times.append(time.perf_counter() - begin)
            print(f"scrape: {spread(times, 'ms', 1000)} with 50,000 queued, 2,000 dead letters; {size:,} bytes")
        finally:
            exporter.stop()
    from meetingtasks.core import tracing

    per_call = [timeit.timeit(lambda: tracing.dispatch_headers("t", "id", "ai.normal"), number=100_000) / 100_000
                for _ in range(args.rounds)]
    print(f"tracing.dispatch_headers without a trace or SDK: {spread(per_call, 'us', 1e6)} per dispatch")


if __name__ == "__main__":
    main()
