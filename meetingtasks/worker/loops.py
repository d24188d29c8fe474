"""Background loops of a worker's main process: lease renewal and the delayed-set pump.

Both run on their own daemon threads rather than on the worker's event loop, so they keep going while a
solo or threads pool is busy; each owns its Redis client (never shared with forked children).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import bootsteps
from celery.worker import state

from meetingtasks.connections import new_client
from meetingtasks.platform import Platform

log = logging.getLogger(__name__)


class Loop:
    """Run ``step`` every ``interval_s`` on a daemon thread; survives Redis outages, logs each one once."""

    def __init__(self, name: str, interval_s: float, step: Callable[[], object]) -> None:
        self.name = name
        self.interval_s = interval_s
        self.step = step
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.step()
            except Exception as exc:
                if not self._failing:
                    log.warning("%s: %s; retrying every %.1fs", self.name, exc, self.interval_s)
                self._failing = True
            else:
                if self._failing:
                    log.info("%s: recovered", self.name)
                self._failing = False


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
            now = time.time()
            # XX: only re-score leases that still exist; an acked message must not come back.
            self.client.zadd(self.platform.keys.unacked_index(self.service), dict.fromkeys(tags, now), xx=True)
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


class PlatformLoops(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer step that runs the lease renewer, the delayed pump and the watchdog while the worker consumes."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.loops: list[Any] = []  # each has start() and stop()

    def start(self, parent: Any) -> None:
        app = parent.app
        dispatcher = getattr(parent, "event_dispatcher", None)
        if dispatcher is not None:
            from meetingtasks.worker.consumer import EVENT_BUFFER_LIMIT

            dispatcher.buffer_limit = EVENT_BUFFER_LIMIT  # flushed on a timer instead (see PlatformConsumer)
        if self.loops:
            return
        from celery.concurrency.prefork import TaskPool as PreforkPool
        from celery.concurrency.solo import TaskPool as SoloPool

        from meetingtasks.watchdog import worker_watchdog  # imported late: the watchdog builds on Loop
        from meetingtasks.worker import transport  # imported late: the transport asks us for held messages

        self.loops = [LeaseRenewer(app.mt_platform, app.mt_service), DelayedPump(app.mt_platform, app.mt_service),
                      worker_watchdog(app)]
        inline = isinstance(getattr(parent, "pool", None), SoloPool)
        transport.use_inline_pool(inline)
        pool = getattr(parent, "pool", None)
        reserve = isinstance(pool, PreforkPool) and app.mt_platform.settings.solo_batch_ms > 0
        transport.use_reserve(int(pool.limit) if reserve and pool is not None else 0)
        if inline:
            self.loops.append(transport.stale_start_flusher(app.mt_service))
        self.loops.append(transport.counts_writer(app.mt_service))
        for loop in self.loops:
            loop.start()

    def stop(self, parent: Any) -> None:
        for loop in self.loops:
            loop.stop()
        self.loops = []

    shutdown = stop
