"""Task types for the benchmarks (workers load them with MEETINGTASKS_INCLUDE=bench.noop_tasks)."""

from __future__ import annotations

import time

from celery.signals import worker_ready
from pydantic import BaseModel

from bench.harness import DONE_KEY, announce_ready
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
