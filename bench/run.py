"""The benchmark suite: meetingtasks against stock Celery on the same Redis, payload and machine.

    python -m bench [--rounds 3] [--only drain,latency] [--quick] [--json bench/results/latest.json]

Each scenario runs its rounds interleaved (ours, stock, ours, stock, ...) because the machine is shared and
noisy; the table shows medians with min-max and the ratio ours/stock. Scenarios of other benchmarks under
``bench/`` (delayed accuracy, bridge latency, gateway fan-out, local bus) run with ``--with-others``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench.harness import (
    DONE_KEY,
    QUEUES,
    READY_KEY,
    ROOT,
    Figure,
    Worker,
    base_env,
    our_worker,
    percentile,
    queued,
    redis_server,
    stock_worker,
    wait_until,
)
from meetingtasks.operations.embedded import compact_aof, data_memory

BLOB = "x" * 150  # with the envelope, a ~200-byte JSON payload like the measurements
OUR_QUEUES = [f"ai.{q}" for q in QUEUES]


def done(client: redis.Redis) -> int:
    return int(client.get(DONE_KEY) or 0)


class Bench:
    def __init__(self, url: str, tmp: Path, rounds: int, quick: bool) -> None:
        self.url = url
        self.tmp = tmp
        self.rounds = rounds
        self.quick = quick
        self.env = base_env(url)
        self.stock_env = base_env(url)
        os.environ.update({k: v for k, v in self.env.items() if k.startswith(("MEETINGTASKS_", "STOCK_"))})
        import bench.noop_tasks
        import bench.stock_app
        from meetingtasks.store.platform import configure

        self.platform = configure()
        self.client = redis.Redis.from_url(url)
        self.stock = bench.stock_app
        self.figures: list[Figure] = []
        self.log_n = 0

    def n(self, full: int) -> int:
        return max(200, full // 10) if self.quick else full

    def log(self, name: str) -> Path:
        self.log_n += 1
        return self.tmp / f"{self.log_n:03d}-{name}.log"

    def reset(self) -> None:
        """An empty Redis with a compacted append-only file, before every round of every scenario (see
        :func:`compact_aof`)."""
        self.client.flushall()
        compact_aof(self.client)

    def figure(self, *args: object, **kwargs: object) -> Figure:
        fig = Figure(*args, **kwargs)  # type: ignore[arg-type]
        self.figures.append(fig)
        return fig

    # --- dispatch -------------------------------------------------------------------------------------------
    def dispatch_loop(self) -> None:
        from meetingtasks import dispatch

        n = self.n(5000)
        fig = self.figure("dispatch loop", "tasks/s", target=">= 2.5x stock apply_async")
        for _ in range(self.rounds):
            self.reset()
            start = time.perf_counter()
            for i in range(n):
                dispatch("bench_noop", {"n": i, "blob": BLOB})
            fig.ours.append(n / (time.perf_counter() - start))
            self.reset()
            start = time.perf_counter()
            for i in range(n):
                self.stock.noop.apply_async((i, BLOB))
            fig.stock.append(n / (time.perf_counter() - start))

    def dispatch_batch(self) -> None:
        from celery import group

        from meetingtasks import dispatch_batch

        n = self.n(10_000)
        fig = self.figure("dispatch_batch of 10,000", "tasks/s", target=">= 25x stock group().apply_async()")
        items = [("bench_noop", {"n": i, "blob": BLOB}) for i in range(n)]
        for _ in range(self.rounds):
            self.reset()
            start = time.perf_counter()
            dispatch_batch(items)
            fig.ours.append(n / (time.perf_counter() - start))
            self.reset()
            start = time.perf_counter()
            group(self.stock.noop.s(i, BLOB) for i in range(n)).apply_async()
            fig.stock.append(n / (time.perf_counter() - start))

    # --- drain ------------------------------------------------------------------------------------------------
    def _drain(self, start_worker: Callable[[], Worker], n: int, workers: int,
               cpu: list[float] | None = None) -> float:
        """Tasks/s of ``workers`` worker processes draining ``n`` queued counting tasks, timed from the moment every
        worker consumes and the first task has run to the last task's run (the counter reaching ``n``). With
        ``cpu``, appends the workers' CPU per task and Redis's, in microseconds, over the same span."""
        self.client.delete(DONE_KEY, READY_KEY)
        procs = [start_worker() for _ in range(workers)]
        try:
            wait_until(lambda: int(self.client.get(READY_KEY) or 0) >= workers and done(self.client) > 0, 120,
                       "every worker to be ready and the first task to run")
            t0, c0 = time.perf_counter(), done(self.client)
            cpu0 = sum(p.cpu_seconds() for p in procs), _redis_cpu_s(self.client)
            wait_until(lambda: done(self.client) >= n, 600, "the last task to run", 0.002)
            rate = (n - c0) / (time.perf_counter() - t0)
            if cpu is not None:
                cpu1 = sum(p.cpu_seconds() for p in procs), _redis_cpu_s(self.client)
                cpu += [(cpu1[0] - cpu0[0]) * 1e6 / (n - c0), (cpu1[1] - cpu0[1]) * 1e6 / (n - c0)]
            return rate
        finally:
            for p in procs:
                p.stop()

    def _queue_ours(self, n: int, task: str = "bench_count") -> None:
        from meetingtasks import dispatch_batch

        for start in range(0, n, 5000):
            dispatch_batch([(task, {"n": i, "blob": BLOB}) for i in range(start, min(n, start + 5000))])

    def _queue_stock(self, n: int, task: Any = None) -> None:
        task = task or self.stock.count
        with self.stock.app.producer_or_acquire() as producer:
            for i in range(n):
                task.apply_async((i, BLOB), producer=producer)

    def drain_overhead(self) -> None:
        """The platform's own cost per task: one solo worker draining no-op tasks that touch nothing (ours and
        stock's), timed from the worker being ready to the queue being empty with nothing leased."""
        n = self.n(20_000)
        fig = self.figure(f"drain {n:,} no-op tasks (no counter): solo, 1 worker process", "tasks/s",
                          target=">= 5,000/s per process")
        for _ in range(self.rounds):
            for ours in (True, False):
                self.reset()
                if ours:
                    self._queue_ours(n, "bench_noop")
                    worker = our_worker(self.env, self.log("overhead-ours"))
                    queues = OUR_QUEUES
                else:
                    self._queue_stock(n, self.stock.noop)
                    worker = stock_worker(self.stock_env, self.log("overhead-stock"))
                    queues = ["celery"]
                try:
                    wait_until(lambda: int(self.client.get(READY_KEY) or 0) >= 1, 120, "the worker to be ready")
                    t0, left0 = time.perf_counter(), queued(self.client, queues)
                    wait_until(lambda q=queues: queued(self.client, q) == 0 and not self.client.exists(
                        "unacked", self.platform.keys.unacked("ai")), 600, "the queue to drain", 0.002)
                    (fig.ours if ours else fig.stock).append(left0 / (time.perf_counter() - t0))
                finally:
                    worker.stop()

    def drain(self, pool: str, concurrency: int = 1, workers: int = 1, *, cpu: bool = False,
              monitor: bool = False) -> None:
        """Both platforms' same pool, interleaved round by round; with ``cpu``, also the CPU per task that the
        worker processes (the pool's included) and Redis spent during the drain; with ``monitor``, while a monitor
        receives Celery's task events (see :class:`EventMonitor`)."""
        n = self.n(20_000)
        where = f"{workers} worker processes" if workers > 1 else "1 worker process"
        name = f"drain {n:,}: {pool}" + (f" ({concurrency})" if pool != "solo" else "") + f", {where}"
        if monitor:
            name += ", a monitor receiving task events"
        target = {"solo": ">= 4x stock (>= 5,000/s per process)", "threads": ">= 2.5x stock",
                  "prefork": ">= 2x stock"}[pool]
        fig = self.figure(name, "tasks/s", target=target)
        worker_cpu = redis_cpu = None
        if cpu:
            worker_cpu = self.figure(f"{name}: worker CPU per task", "us", higher_is_better=False)
            redis_cpu = self.figure(f"{name}: Redis CPU per task", "us", higher_is_better=False)
        for _ in range(self.rounds):
            for ours in (True, False):
                self.reset()
                spent: list[float] | None = [] if cpu else None
                with EventMonitor(self.client) if monitor else contextlib.nullcontext():
                    if ours:
                        self._queue_ours(n)
                        rate = self._drain(lambda: our_worker(self.env, self.log(f"drain-{pool}-ours"), pool=pool,
                                                              concurrency=concurrency), n, workers, spent)
                    else:
                        self._queue_stock(n)
                        rate = self._drain(lambda: stock_worker(self.stock_env, self.log(f"drain-{pool}-stock"),
                                                                pool=pool, concurrency=concurrency), n, workers,
                                           spent)
                (fig.ours if ours else fig.stock).append(rate)
                if spent and worker_cpu is not None and redis_cpu is not None:
                    (worker_cpu.ours if ours else worker_cpu.stock).append(spent[0])
                    (redis_cpu.ours if ours else redis_cpu.stock).append(spent[1])

    # --- latency ----------------------------------------------------------------------------------------------
    def _paced(self, rate: float, n: int, send: Callable[[float], None]) -> None:
        interval = 1.0 / rate
        t_next = time.perf_counter()
        for _ in range(n):
            now = time.perf_counter()
            if now < t_next:
                time.sleep(t_next - now)
            send(time.time())
            t_next += interval

    def _start_latencies(self, n: int) -> list[float]:
        wait_until(lambda: int(self.client.llen("bench:starts")) >= n, 120, "every task to start")
        out = []
        for raw in self.client.lrange("bench:starts", 0, -1):
            sent, started = raw.decode().split("|")
            out.append((float(started) - float(sent)) * 1000)
        return out

    def latency(self, rate: float) -> None:
        from meetingtasks import dispatch

        n = self.n(int(rate * 5))
        figs = {p: self.figure(f"dispatch -> start at {rate:.0f}/s, p{p}", "ms", higher_is_better=False,
                               target="p99 <= 1.5x stock" if p == 99 else "") for p in (50, 95, 99)}
        done = self.figure(f"dispatch -> SUCCEEDED at {rate:.0f}/s, p99", "ms", higher_is_better=False)
        for _ in range(self.rounds):
            self.reset()
            worker = our_worker(self.env, self.log("latency-ours"), pool="threads", concurrency=4)
            try:
                self._warm(lambda: dispatch("bench_mark", {"sent_at": time.time(), "key": "bench:warm"}))
                handles: list[Any] = []
                self._paced(rate, n, lambda t, out=handles: out.append(dispatch("bench_mark", {"sent_at": t})))
                lat = self._start_latencies(n)
                last = handles[-1]
                wait_until(lambda last=last: last.status() == "SUCCEEDED", 60, "the last task")
                finished = []
                for h in handles:
                    info = h.info()
                    created = float(info.fields["created_at"])
                    end = [t for s, t, _ in info.history if s.value == "SUCCEEDED"]
                    if end:
                        finished.append((end[0] - created) * 1000)
                done.ours.append(percentile(finished, 99))
            finally:
                worker.stop()
            for p, fig in figs.items():
                fig.ours.append(percentile(lat, p))
            self.reset()
            worker = stock_worker(self.stock_env, self.log("latency-stock"), pool="threads", concurrency=4)
            try:
                self._warm(lambda: self.stock.mark.delay(time.time(), 0.0, "bench:warm"))
                self._paced(rate, n, lambda t: self.stock.mark.delay(t))
                lat = self._start_latencies(n)
            finally:
                worker.stop()
            for p, fig in figs.items():
                fig.stock.append(percentile(lat, p))

    def _warm(self, send: Callable[[], object]) -> None:
        for _ in range(5):
            send()
        wait_until(lambda: int(self.client.llen("bench:warm")) >= 5, 60, "the worker to warm up")

    # --- priority under load ------------------------------------------------------------------------------------
    def priority_under_load(self) -> None:
        from meetingtasks import dispatch, dispatch_batch

        backlog = self.n(50_000)
        low_run_s = 0.002
        fig = self.figure("critical wait under a 50,000 low backlog, p99", "ms", higher_is_better=False,
                          target=f"< one low task ({low_run_s * 1000:.0f} ms) + 5 ms")
        for _ in range(self.rounds):
            self.reset()
            for start in range(0, backlog, 5000):
                dispatch_batch([{"type": "bench_mark", "payload": {"sent_at": 0, "sleep_s": low_run_s,
                                                                   "key": "bench:low"}, "priority": "low"}
                                for _ in range(start, min(backlog, start + 5000))])
            worker = our_worker(self.env, self.log("priority"), pool="solo")
            try:
                wait_until(lambda: int(self.client.llen("bench:low")) > 50, 60, "the backlog to flow")
                n = 100
                for _ in range(n):
                    dispatch("bench_mark", {"sent_at": time.time()}, priority="critical")
                    time.sleep(0.02)
                fig.ours.append(percentile(self._start_latencies(n), 99))
            finally:
                worker.stop()

    # --- memory ---------------------------------------------------------------------------------------------------
    def memory(self) -> None:
        from meetingtasks import dispatch_batch

        total = self.n(100_000)
        idle = self.figure("worker RSS idle", "MiB", higher_is_better=False)
        at_10k = self.figure("worker RSS after 10,000 tasks", "MiB", higher_is_better=False)
        at_end = self.figure(f"worker RSS after {total:,} tasks", "MiB", higher_is_better=False,
                             target="within 10% of RSS at 10,000")
        per_task = self.figure("Redis memory per queued task", "bytes", higher_is_better=False)
        self.reset()
        before = data_memory(self.client)
        dispatch_batch([("bench_noop", {"n": i, "blob": BLOB}) for i in range(10_000)])
        per_task.ours.append((data_memory(self.client) - before) / 10_000)
        self.reset()
        before = data_memory(self.client)
        with self.stock.app.producer_or_acquire() as producer:
            for i in range(10_000):
                self.stock.noop.apply_async((i, BLOB), producer=producer)
        per_task.stock.append((data_memory(self.client) - before) / 10_000)
        self.reset()
        worker = our_worker(self.env, self.log("memory"), pool="solo")
        try:
            time.sleep(3)  # let the worker finish starting; nothing to poll for an idle process
            idle.ours.append(worker.rss_bytes() / 2**20)
            done = 0
            for start in range(0, total, 10_000):
                end = min(total, start + 10_000)
                dispatch_batch([("bench_noop", {"n": i, "blob": BLOB}) for i in range(start, end)])
                wait_until(lambda: queued(self.client, OUR_QUEUES) == 0, 600, "the batch to drain", 0.01)
                done += 10_000
                if done == 10_000:
                    at_10k.ours.append(worker.rss_bytes() / 2**20)
            at_end.ours.append(worker.rss_bytes() / 2**20)
        finally:
            worker.stop()

    # --- Redis commands and CPU per task ---------------------------------------------------------------------------
    def redis_cost(self, pool: str = "solo") -> None:
        """Redis commands (every call a script makes counts, as Redis counts them) and Redis CPU per task, from
        dispatch to ack, for a no-op task drained by one worker of ``pool`` (concurrency 1)."""
        n = self.n(10_000)
        commands = self.figure(f"Redis commands per task, {pool} (dispatch + run + ack)", "commands",
                               higher_is_better=False, target="<= 12")
        cpu = self.figure(f"Redis CPU per task, {pool} (dispatch + run + ack)", "us", higher_is_better=False,
                          target="<= 50 us")
        for _ in range(self.rounds):
            for ours in (True, False):
                self.reset()
                self.client.config_resetstat()
                cpu0 = _redis_cpu_s(self.client)
                if ours:
                    self._queue_ours(n, "bench_noop")
                    worker = our_worker(self.env, self.log(f"cost-{pool}"), pool=pool)
                    queues = OUR_QUEUES
                else:
                    self._queue_stock(n, self.stock.noop)
                    worker = stock_worker(self.stock_env, self.log(f"cost-{pool}-stock"), pool=pool)
                    queues = ["celery"]
                try:
                    # Drained when no message is queued and none is leased any more (kombu's unacked hash: ours, and
                    # stock's, which acks early).
                    wait_until(lambda q=queues: queued(self.client, q) == 0 and not self.client.exists(
                        "unacked", self.platform.keys.unacked("ai")), 600, "the queue to drain", 0.01)
                finally:
                    worker.stop()
                per_task_cpu = (_redis_cpu_s(self.client) - cpu0) / n * 1e6
                (commands.ours if ours else commands.stock).append(_commands(self.client) / n)
                (cpu.ours if ours else cpu.stock).append(per_task_cpu)


class EventMonitor:
    """A monitor of Celery's events for the length of a block, as Flower is one: a pattern subscription to the events
    exchange's channels (kombu's), reading every message in a thread. meetingtasks sends task events only while
    someone receives them (meetingtasks.worker.task_events); stock Celery's defaults send none either way."""

    def __init__(self, client: redis.Redis) -> None:
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        while not self._stop.is_set():
            if self.pubsub.get_message(timeout=0.1) is not None:
                self.received += 1

    def __enter__(self) -> EventMonitor:
        self.pubsub.psubscribe("/*.celeryev/*")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pubsub.close()


def _redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


#: The services of the sharding benchmark, their no-op task types, and how 1, 2 and 3 Redis instances split them.
SHARD_TYPES = {"ai": "bench_noop", "user": "bench_noop_user", "media": "bench_noop_media"}
SHARD_LAYOUTS = {1: {}, 2: {"user": 1, "media": 1}, 3: {"user": 1, "media": 2}}


def sharding(bench: Bench) -> None:
    """Three services draining at once, on one Redis, then split over two and three Redis instances
    (``service_redis_urls``); on one Redis also what the capacity model needs: Redis CPU, commands and memory per
    task (docs/high-availability.md, capacity)."""
    from meetingtasks.core.settings import Settings
    from meetingtasks.enqueue.dispatcher import Dispatcher
    from meetingtasks.operations.embedded import RedisServer
    from meetingtasks.store.platform import Platform

    n = bench.n(10_000)
    figs = {k: bench.figure(f"drain ai + user + media over {k} Redis", "tasks/s") for k in SHARD_LAYOUTS}
    cpu = bench.figure("Redis CPU per task (dispatch + run + ack, one Redis)", "us", higher_is_better=False)
    commands = bench.figure("Redis commands per task (dispatch + run + ack, one Redis)", "commands",
                            higher_is_better=False)
    memory = bench.figure("Redis memory per queued task (~200-byte payload)", "bytes", higher_is_better=False)
    extra = [RedisServer(bench.tmp / f"redis-{i}").start() for i in (2, 3)]
    urls_of = [bench.url, *(server.url for server in extra)]
    try:
        for _ in range(bench.rounds):
            for k, layout in SHARD_LAYOUTS.items():
                fig = figs[k]
                urls = {svc: urls_of[i] for svc, i in layout.items()}
                clients = [redis.Redis.from_url(url) for url in urls_of[:k]]
                for c in clients:
                    c.flushall()
                    c.config_resetstat()
                client_of = {svc: clients[layout.get(svc, 0)] for svc in SHARD_TYPES}
                platform = Platform(Settings(redis_url=bench.url, service_redis_urls=urls))
                dispatcher = Dispatcher(platform)
                cpu_before = sum(_redis_cpu_s(c) for c in clients)
                memory_before = data_memory(clients[0])
                for start in range(0, n, 5000):
                    end = min(n, start + 5000)
                    for task in SHARD_TYPES.values():
                        dispatcher.dispatch_batch([(task, {"n": i, "blob": BLOB}) for i in range(start, end)])
                if k == 1:
                    memory.ours.append((data_memory(clients[0]) - memory_before) / (3 * n))
                env = {**bench.env, "MEETINGTASKS_SERVICE_REDIS_URLS": json.dumps(urls)}
                procs = [Worker([sys.executable, "-m", "meetingtasks", "worker", svc, "--pool", "threads",
                                 "--concurrency", "8", "--loglevel", "WARNING", "--without-mingle", "--without-gossip"],
                                env, bench.log(f"shard{k}-{svc}")) for svc in SHARD_TYPES]
                queues = [(client_of[svc], [f"{svc}.{q}" for q in QUEUES]) for svc in SHARD_TYPES]
                try:
                    def left(queues: list[tuple[redis.Redis, list[str]]] = queues) -> int:
                        return sum(queued(c, qs) for c, qs in queues)
                    wait_until(lambda: left() < 3 * n, 60, "the first fetch")
                    t0, left0 = time.perf_counter(), left()
                    wait_until(lambda: left() == 0, 600, "the queues to drain", 0.005)
                    fig.ours.append(left0 / (time.perf_counter() - t0))
                finally:
                    for proc in procs:
                        proc.stop()
                if k == 1:
                    cpu.ours.append((sum(_redis_cpu_s(c) for c in clients) - cpu_before) / (3 * n) * 1e6)
                    commands.ours.append(_commands(clients[0]) / (3 * n))
    finally:
        for server in extra:
            server.stop()


def replica_acks(bench: Bench) -> None:
    """What ``min_replica_acks=1`` costs a producer: the dispatch loop and dispatch_batch against a primary with
    one replica attached, without and with the WAIT (docs/high-availability.md)."""
    from meetingtasks.core.settings import Settings
    from meetingtasks.enqueue.dispatcher import Dispatcher
    from meetingtasks.operations.embedded_sentinel import SentinelGroup
    from meetingtasks.store.platform import Platform

    n = bench.n(5000)
    batch_n = bench.n(10_000)
    group = SentinelGroup(bench.tmp / "replicated")
    for node in group.nodes:  # a primary and its replica; no sentinels needed to measure WAIT
        node.start()
    group.wait_synced()
    primary = group.nodes[0].url
    client = redis.Redis.from_url(primary)
    loops = {acks: bench.figure(f"dispatch loop, one replica, min_replica_acks={acks}", "tasks/s") for acks in (0, 1)}
    batches = {acks: bench.figure(f"dispatch_batch of 10,000, one replica, min_replica_acks={acks}", "tasks/s")
               for acks in (0, 1)}
    items = [("bench_noop", {"n": i, "blob": BLOB}) for i in range(batch_n)]
    try:
        for _ in range(bench.rounds):
            for acks in (0, 1):  # interleaved: the machine is shared and noisy
                dispatcher = Dispatcher(Platform(Settings(redis_url=primary, min_replica_acks=acks)))
                client.flushall()
                start = time.perf_counter()
                for i in range(n):
                    dispatcher.dispatch("bench_noop", {"n": i, "blob": BLOB})
                loops[acks].ours.append(n / (time.perf_counter() - start))
                client.flushall()
                start = time.perf_counter()
                dispatcher.dispatch_batch(items)
                batches[acks].ours.append(batch_n / (time.perf_counter() - start))
    finally:
        client.close()
        group.stop()


def _commands(client: redis.Redis) -> float:
    stats = client.info("commandstats")
    skip = {"cmdstat_info", "cmdstat_config", "cmdstat_llen", "cmdstat_exists"}  # the benchmark's own polling
    return float(sum(v["calls"] for k, v in stats.items() if k not in skip))


def _dispatch(b: Bench) -> None:
    b.dispatch_loop()
    b.dispatch_batch()


def _drain(b: Bench) -> None:
    b.drain_overhead()
    b.drain("solo", cpu=True)
    b.drain("solo", workers=2)
    b.drain("prefork", 1, cpu=True)
    b.drain("prefork", 1, monitor=True)
    b.drain("prefork", os.cpu_count() or 1, cpu=True)
    b.drain("threads", 8, cpu=True)


def _costs(b: Bench) -> None:
    b.redis_cost("solo")
    b.redis_cost("prefork")


def _latency(b: Bench) -> None:
    b.latency(200)
    b.latency(1000)


def _startup(b: Bench) -> None:
    from bench.startup import startup

    startup(b)


SCENARIOS: dict[str, Callable[[Bench], None]] = {
    "dispatch": _dispatch,
    "drain": _drain,
    "latency": _latency,
    "priority": Bench.priority_under_load,
    "memory": Bench.memory,
    "commands": _costs,
    "startup": _startup,
    "sharding": sharding,
    "replicas": replica_acks,
}

OTHERS = ["bench.delayed", "bench.bridge", "bench.local_bus", "bench.dispatch", "bench.gateway"]


def table(figures: list[Figure]) -> str:
    def cell(values: list[float]) -> str:
        if not values:
            return "-"
        med = sorted(values)[len(values) // 2]
        return f"{med:,.1f} ({min(values):,.1f}-{max(values):,.1f})"

    rows = ["| scenario | unit | meetingtasks median (min-max) | stock Celery median (min-max) | ours/stock | target |",
            "|---|---|---|---|---|---|"]
    for f in figures:
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else "-"
        rows.append(f"| {f.name} | {f.unit} | {cell(f.ours)} | {cell(f.stock)} | {ratio} | {f.target} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated: " + ", ".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="a tenth of the task counts (a smoke run)")
    parser.add_argument("--with-others", action="store_true", help="also run " + ", ".join(OTHERS))
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "latest.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with redis_server(tmp) as server:
            bench = Bench(server.url, tmp, args.rounds, args.quick)
            for name in args.only.split(","):
                print(f"== {name}", flush=True)
                SCENARIOS[name.strip()](bench)
                print(table(bench.figures), flush=True)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"time": time.time(), "rounds": args.rounds, "quick": args.quick,
                               "figures": [f.to_dict() for f in bench.figures]}, indent=2))
    print(f"\n{table(bench.figures)}\n\nwritten to {out}")
    if args.with_others:
        for module in OTHERS:
            print(f"\n== {module}", flush=True)
            subprocess.run([sys.executable, "-m", module], cwd=ROOT, check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
