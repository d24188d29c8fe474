"""Counters of long-running parts (the bridge), published to Redis for the exporter to read.

A part keeps its counters in memory; a :class:`StatsReporter` writes them as one JSON field of a shared
hash every ``heartbeat_interval_s`` (with the time, so a stale entry shows the part is gone) and deletes
the field on a clean stop. The exporter turns each field into per-instance counters.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import redis

from meetingtasks.core.loop import Loop
from meetingtasks.core.message import dumps, loads
from meetingtasks.metrics.heartbeat import FORGET_AFTER_S, HASH_TTL_S, STALE_AFTER_INTERVALS
from meetingtasks.store.connections import new_client
from meetingtasks.store.platform import Platform


class StatsReporter:
    """Write ``snapshot()`` under ``field`` of hash ``key`` now and every ``interval_s``; ``stop()`` is safe twice."""

    def __init__(self, client: redis.Redis, key: str, field: str, snapshot: Callable[[], dict[str, Any]],
                 interval_s: float) -> None:
        self.client = client
        self.key = key
        self.field = field
        self.snapshot = snapshot
        self.interval_s = interval_s
        self.loop = Loop(f"stats-reporter-{field}", interval_s, self.report)
        self.running = False

    def report(self) -> None:
        entry = {**self.snapshot(), "time": time.time(), "interval_s": self.interval_s}
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(self.key, self.field, dumps(entry))
            pipe.expire(self.key, HASH_TTL_S)
            pipe.execute()

    def start(self) -> StatsReporter:
        with contextlib.suppress(redis.RedisError):  # the loop retries and logs
            self.report()
        self.loop.start()
        self.running = True
        return self

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        self.loop.stop()
        with contextlib.suppress(redis.RedisError):
            self.client.hdel(self.key, self.field)


def bridge_reporter(platform: Platform, bridge: Any) -> StatsReporter:
    """A reporter of ``bridge.stats`` (:class:`meetingtasks.events.bridge.BridgeStats`) under ``P bridges``."""

    def snapshot() -> dict[str, Any]:
        return {**asdict(bridge.stats), "ready": bridge.ready.is_set(), "reconnects": bridge.reconnects}

    client = new_client(platform.settings.broker_url(), platform.settings)
    return StatsReporter(client, platform.keys.bridges, bridge.consumer, snapshot,
                         platform.settings.heartbeat_interval_s)


def read_reports(client: redis.Redis, key: str, now: float | None = None) -> dict[str, dict[str, Any]]:
    """Field -> report with ``age_s`` and ``alive`` added; forgets fields older than :data:`FORGET_AFTER_S`."""
    now = time.time() if now is None else now
    reports: dict[str, dict[str, Any]] = {}
    forget: list[Any] = []
    for name, raw in client.hgetall(key).items():
        try:
            report = loads(raw)
            age_s = max(0.0, now - float(report["time"]))
            interval_s = float(report.get("interval_s") or 2.0)
        except (ValueError, TypeError, KeyError):
            forget.append(name)
            continue
        if age_s > FORGET_AFTER_S:
            forget.append(name)
            continue
        report.update(age_s=age_s, alive=age_s <= STALE_AFTER_INTERVALS * interval_s + 1.0)
        reports[name.decode() if isinstance(name, bytes) else str(name)] = report
    if forget:
        client.hdel(key, *forget)
    return reports
