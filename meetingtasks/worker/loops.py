"""Background loops of a worker's main process: lease renewal and the delayed-set pump (beat runs the pump too).

Both run on their own daemon threads (:class:`~meetingtasks.core.loop.Loop`) rather than on the worker's event
loop, so they keep going while a solo or threads pool is busy; each owns its Redis client (never shared with
forked children). The consumer step that starts them is :class:`meetingtasks.worker.app.PlatformLoops`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from celery.worker import state

from meetingtasks.core.loop import Loop
from meetingtasks.store.connections import new_client
from meetingtasks.store.platform import Platform

log = logging.getLogger(__name__)


#: More holders of messages than Celery's request sets: the consuming channel adds the rest of a solo batch (fetched,
#: not handed to Celery yet) and messages whose ack is buffered but not applied (see meetingtasks.worker.transport).
_held_sources: list[Callable[[], list[str]]] = []


def add_held_source(source: Callable[[], list[str]]) -> None:
    if source not in _held_sources:
        _held_sources.append(source)


def held_delivery_tags() -> list[str]:
    """Delivery tags of every message this worker has fetched and whose ack is not applied yet: Celery's active and
    reserved requests plus what the sources above add."""
    extra = [tag for source in _held_sources for tag in source()]
    for _ in range(5):
        try:
            requests = [*state.active_requests, *state.reserved_requests]
            break
        except RuntimeError:  # the sets changed size while we copied them; try again
            continue
    else:
        return extra
    tags = extra
    for req in requests:
        message = getattr(req, "message", None)
        tag = getattr(message, "delivery_tag", None)
        if tag is not None:
            tags.append(str(tag))
    return tags


def lease_score(now_s: float) -> int:
    """A lease's score in the unacked index: its start (or last renewal) in whole seconds, rounded up, so a lease is
    restored up to a second late, never early. Whole seconds because Redis keeps a small sorted set as a flat list in
    which it reads every member's score on each ``ZADD`` and ``ZREM``, and it reads one stored as an integer without
    parsing a float: the fetch's lease writes took about 2.5 us of Redis time less per task (``python -m
    bench.fetch_replay``). The fetch script (lua/fetch.lua) scores its leases by the same rule."""
    return math.ceil(now_s)


class LeaseRenewer:
    """Re-scores the unacked index for held messages so kombu's restore sweep leaves them alone."""

    def __init__(self, platform: Platform, service: str) -> None:
        self.platform = platform
        self.service = service
        self.client = new_client(platform.settings.broker_url(service), platform.settings)
        self.loop = Loop(f"lease-renewer-{service}", platform.settings.lease_interval_s, self.renew)

    def renew(self) -> int:
        tags = held_delivery_tags()
        if tags:
            # XX: only re-score leases that still exist; an acked message must not come back.
            self.client.zadd(self.platform.keys.unacked_index(self.service),
                             dict.fromkeys(tags, lease_score(time.time())), xx=True)
        return len(tags)

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()


class DelayedPump:
    """Moves due delayed tasks of one service onto their queues; many may race safely."""

    def __init__(self, platform: Platform, service: str) -> None:
        self.platform = platform
        self.service = service
        self.client = new_client(platform.settings.broker_url(service), platform.settings)
        self.loop = Loop(f"delayed-pump-{service}", platform.settings.pump_interval_s, self.pump)

    def pump(self) -> int:
        return self.platform.delayed.pump_all(self.client, self.service, batch=self.platform.settings.pump_batch)

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()
