"""Worker liveness: a heartbeat written by the worker's consumer event loop, read by the exporter.

A live process is not enough: a worker whose consumer is stuck, or reconnecting to a broker it lost, is
of no use. The heartbeat is a consumer bootstep driven by the consumer's own timer, on the same event
loop that reads the queues; Celery stops consumer steps while the broker connection is being restored.
So a fresh heartbeat means "this worker's consumer is running", and its ``processed`` count (tasks
accepted since start) shows consumption progress. With ``--pool solo`` the loop is busy while a task
runs, so a long task delays the heartbeat: the exporter reports such a worker as stale, not dead.

A clean shutdown removes the worker's entry; a killed worker's entry goes stale (``up`` 0) and is pruned
after :data:`FORGET_AFTER_S`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import redis
from celery import bootsteps
from celery.worker import state

from meetingtasks.core.message import dumps, loads
from meetingtasks.store.platform import Platform

log = logging.getLogger(__name__)

#: A worker is alive while its last heartbeat is younger than this many intervals.
STALE_AFTER_INTERVALS = 3
#: Entries of workers gone this long are deleted by the reader.
FORGET_AFTER_S = 3_600
#: The heartbeat hash outlives its last writer by a day.
HASH_TTL_S = 86_400


@dataclass(frozen=True)
class Heartbeat:
    service: str
    worker: str
    pid: int
    time: float
    started_at: float
    processed: int
    active: int
    interval_s: float

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.time)

    def alive(self, now: float) -> bool:
        return self.age_s(now) <= STALE_AFTER_INTERVALS * self.interval_s + 1.0


def write_heartbeat(client: redis.Redis, platform: Platform, beat: Heartbeat) -> None:
    key = platform.keys.workers(beat.service)
    with client.pipeline(transaction=False) as pipe:
        pipe.hset(key, beat.worker, dumps(beat.__dict__))
        pipe.expire(key, HASH_TTL_S)
        # Tools that do not import the service's code learn of it here (Platform.services); re-added every
        # beat (one SADD) so that a flushed or restored Redis learns it again.
        pipe.sadd(platform.keys.services, beat.service)
        pipe.execute()


def read_heartbeats(client: redis.Redis, platform: Platform, service: str, now: float | None = None) -> list[Heartbeat]:
    """Every heartbeat of ``service``; forgets (deletes) entries older than :data:`FORGET_AFTER_S`."""
    now = time.time() if now is None else now
    key = platform.keys.workers(service)
    beats: list[Heartbeat] = []
    forget: list[Any] = []
    for name, raw in client.hgetall(key).items():
        try:
            beat = Heartbeat(**loads(raw))
        except (ValueError, TypeError):
            forget.append(name)
            continue
        if beat.age_s(now) > FORGET_AFTER_S:
            forget.append(name)
        else:
            beats.append(beat)
    if forget:
        client.hdel(key, *forget)
    return beats


class WorkerHeartbeat(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer step: every ``heartbeat_interval_s`` on the consumer's timer, write this worker's heartbeat."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.tref: Any = None
        self.started_at = time.time()
        self.failing = False

    def start(self, parent: Any) -> None:
        platform: Platform = parent.app.mt_platform
        self.beat(parent)
        self.tref = parent.timer.call_repeatedly(platform.settings.heartbeat_interval_s, self.beat, (parent,))

    def stop(self, parent: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)
        platform: Platform = parent.app.mt_platform
        service = parent.app.mt_service
        with contextlib.suppress(redis.RedisError):  # Redis gone too: the entry goes stale, forgotten later
            platform.redis(service).hdel(platform.keys.workers(service), parent.hostname)

    def beat(self, parent: Any) -> None:
        app = parent.app
        platform: Platform = app.mt_platform
        beat = Heartbeat(
            service=app.mt_service,
            worker=parent.hostname,
            pid=os.getpid(),
            time=time.time(),
            started_at=self.started_at,
            processed=sum(state.total_count.values()),
            active=len(state.active_requests),
            interval_s=platform.settings.heartbeat_interval_s,
        )
        try:
            write_heartbeat(platform.redis(app.mt_service), platform, beat)
        except redis.RedisError as exc:
            if not self.failing:
                log.warning("heartbeat of %s: %s; retrying", parent.hostname, exc)
            self.failing = True
        else:
            if self.failing:
                log.info("heartbeat of %s: recovered", parent.hostname)
            self.failing = False
