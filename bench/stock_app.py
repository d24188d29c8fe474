"""Stock Celery, configured the way the Celery documentation shows, for the comparisons.

``STOCK_BROKER`` names the Redis URL. Defaults everywhere (acks early, prefetch 4, no task events); the
scenarios that measure the reliability features set ``STOCK_ACKS_LATE=1``.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery
from celery.signals import worker_ready

from bench.harness import DONE_KEY, announce_ready

app = Celery("stock", broker=os.environ.get("STOCK_BROKER", "redis://localhost:6379/0"))
if os.environ.get("STOCK_ACKS_LATE"):
    app.conf.task_acks_late = True
    app.conf.worker_prefetch_multiplier = 1

worker_ready.connect(announce_ready, weak=False)

_redis: redis.Redis | None = None


def _client() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ["STOCK_BROKER"])
    return _redis


@app.task(name="noop")
def noop(n: int, blob: str = "") -> int:
    return n


@app.task(name="count")
def count(n: int, blob: str = "") -> int:
    _client().incr(DONE_KEY)
    return n


@app.task(name="mark")
def mark(sent_at: float, sleep_s: float = 0.0, key: str = "bench:starts") -> None:
    started = time.time()
    _client().rpush(key, f"{sent_at}|{started}")
    if sleep_s:
        time.sleep(sleep_s)
