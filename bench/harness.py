"""Processes the benchmarks drive: a redis-server, meetingtasks workers and stock Celery workers."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import redis
from cryptography.fernet import Fernet

from meetingtasks.operations.embedded import RedisServer

ROOT = Path(__file__).resolve().parent.parent
QUEUES = ("critical", "high", "normal", "low")


def base_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEETINGTASKS_")}
    env.update(
        MEETINGTASKS_REDIS_URL=url,
        MEETINGTASKS_INCLUDE="bench.noop_tasks",
        MEETINGTASKS_LOG_LEVEL="WARNING",
        # One key for every process of the run (secret task fields are sealed with it).
        MEETINGTASKS_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        STOCK_BROKER=url,
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    env.update(extra)
    return env


@contextmanager
def redis_server(tmp: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp / "redis", appendfsync="everysec").start()
    try:
        yield server
    finally:
        server.stop()


class Worker:
    """A worker subprocess in its own process group (so its pool children die with it)."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(list(argv), env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()

    def cpu_seconds(self) -> float:
        """CPU time (user and system) of the worker and its pool children so far."""
        import psutil

        total = 0.0
        with suppress(psutil.Error):
            parent = psutil.Process(self.proc.pid)
            for proc in [parent, *parent.children(recursive=True)]:
                with suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
        return total

    def rss_bytes(self) -> int:
        """Resident memory of the worker and its pool children."""
        pids = [self.proc.pid]
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
        pids += [int(p) for p in out.stdout.split()]
        total = 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                continue
        return total


def our_worker(env: dict[str, str], log: Path, *, pool: str = "solo", concurrency: int = 1) -> Worker:
    return Worker([sys.executable, "-m", "meetingtasks", "worker", "ai", "--pool", pool, "--concurrency",
                   str(concurrency), "--loglevel", "WARNING", "--without-mingle", "--without-gossip"], env, log)


def stock_worker(env: dict[str, str], log: Path, *, pool: str = "solo", concurrency: int = 1) -> Worker:
    return Worker([sys.executable, "-m", "celery", "-A", "bench.stock_app", "worker", "--pool", pool,
                   "--concurrency", str(concurrency), "--loglevel", "WARNING", "--without-mingle",
                   "--without-gossip"], env, log)


READY_KEY = "bench:workers-ready"
#: Incremented by every run of the drain benchmark's counting task (ours and stock's).
DONE_KEY = "bench:done"
#: Where ``bench_count_timed`` sends the timings of its INCR (``python -m bench.task_round_trip``).
ROUND_TRIPS_KEY = "bench:round-trips"


def announce_ready(**_: object) -> None:
    """``worker_ready`` receiver of both apps' task modules: counts the workers that are consuming, so a drain
    is timed from the moment all of its workers take messages (a second worker starting a second later would
    otherwise be measured as one worker's drain)."""
    redis.Redis.from_url(os.environ["STOCK_BROKER"]).incr(READY_KEY)


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.005) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def queued(client: redis.Redis, queues: Sequence[str]) -> int:
    with client.pipeline(transaction=False) as pipe:
        for q in queues:
            pipe.llen(q)
        return sum(int(n) for n in pipe.execute())


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1))))
    return ordered[k]


@dataclass
class Figure:
    """One measured quantity over several rounds."""

    name: str
    unit: str
    ours: list[float] = field(default_factory=list)
    stock: list[float] = field(default_factory=list)
    higher_is_better: bool = True
    target: str = ""

    def median(self, values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    @property
    def ratio(self) -> float | None:
        if not self.ours or not self.stock:
            return None
        return self.median(self.ours) / self.median(self.stock)

    def to_dict(self) -> dict[str, object]:
        def block(values: list[float]) -> dict[str, float] | None:
            if not values:
                return None
            return {"median": self.median(values), "min": min(values), "max": max(values), "n": len(values)}

        return {"name": self.name, "unit": self.unit, "ours": block(self.ours), "stock": block(self.stock),
                "ratio_ours_over_stock": self.ratio, "target": self.target}
