"""Task types for the benchmarks (workers load them with MEETINGTASKS_INCLUDE=bench.noop_tasks)."""

from __future__ import annotations

import threading
import time

from celery.signals import worker_ready
from pydantic import BaseModel

from bench.harness import DONE_KEY, ROUND_TRIPS_KEY, announce_ready
from meetingtasks.core.registry import task_type
from meetingtasks.store.platform import get_platform

worker_ready.connect(announce_ready, weak=False)


class NoopPayload(BaseModel):
    n: int = 0
    blob: str = ""


class MarkPayload(BaseModel):
    sent_at: float
    sleep_s: float = 0.0
    key: str = "bench:starts"


@task_type("ai", "bench_noop", payload=NoopPayload)
def bench_noop(p: NoopPayload) -> int:
    return p.n


@task_type("ai", "bench_count", payload=NoopPayload)
def bench_count(p: NoopPayload) -> int:
    """The drain benchmark's task: a no-op that counts itself, so a drain is timed from the first task run to the
    last (stock's ``count`` does the same)."""
    get_platform().redis().incr(DONE_KEY)
    return p.n


#: This process's timings of ``bench_count_timed``'s INCR (seconds), sent to Redis a chunk at a time.
_round_trips: list[float] = []
_round_trips_lock = threading.Lock()  # a threads worker's tasks time their calls side by side
ROUND_TRIPS_CHUNK = 500


@task_type("ai", "bench_count_timed", payload=NoopPayload)
def bench_count_timed(p: NoopPayload) -> int:
    """``bench_count`` that times its own ``INCR`` (``python -m bench.task_round_trip``): every
    ``ROUND_TRIPS_CHUNK`` runs it pushes the chunk's timings (microseconds, comma-separated) to a list."""
    client = get_platform().redis()
    started = time.perf_counter()
    client.incr(DONE_KEY)
    took = time.perf_counter() - started
    with _round_trips_lock:
        _round_trips.append(took)
        chunk = _round_trips[:] if len(_round_trips) >= ROUND_TRIPS_CHUNK else None
        if chunk is not None:
            _round_trips.clear()
    if chunk is not None:
        client.rpush(ROUND_TRIPS_KEY, ",".join(f"{t * 1e6:.1f}" for t in chunk))
    return p.n


@task_type("ai", "bench_mark", payload=MarkPayload)
def bench_mark(p: MarkPayload) -> None:
    """Records when it started next to when it was sent, then optionally works for ``sleep_s``."""
    started = time.time()
    get_platform().redis().rpush(p.key, f"{p.sent_at}|{started}")
    if p.sleep_s:
        time.sleep(p.sleep_s)


@task_type("user", "bench_noop_user", payload=NoopPayload)
def bench_noop_user(p: NoopPayload) -> int:
    """The same no-op on a second service, for the sharding scenario (services on separate Redis instances)."""
    return p.n


@task_type("media", "bench_noop_media", payload=NoopPayload)
def bench_noop_media(p: NoopPayload) -> int:
    """A third service's no-op, for the sharding benchmark's three Redis instances."""
    return p.n
