"""The watchdog: times out overdue tasks and fires callbacks.

A task dispatched with ``timeout`` has its deadline (epoch ms) in the zset ``P deadlines``; its terminal
transition removes it. Every ``watchdog_interval_s`` the watchdog takes the entries past their deadline and
marks those tasks TIMED_OUT (the Lua transition refuses if the task finished meanwhile, so a task that just
succeeded stays SUCCEEDED). A timed-out task waiting in the delayed set is taken out of it; a queued one is
skipped by the worker that later pops it (its STARTED transition is refused); a running one is revoked, and
its late result is refused too. Its failure callback fires through the outbox like any other ending.

Then it drains the callback outbox (:class:`~meetingtasks.store.callbacks.CallbackPump`).

Every worker runs a watchdog for its service's Redis: many watchdogs racing are safe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis

from meetingtasks.core.loop import Loop
from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.store.callbacks import CallbackPump
from meetingtasks.store.cancel import control_app, revoke
from meetingtasks.store.connections import new_client
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status

log = logging.getLogger(__name__)

#: ``revoke(service, task_id)``: stop a running task.
Revoker = Callable[[str, str], None]


class Watchdog:
    """Times out overdue tasks and drains the callback outbox on one Redis server; ``start()``/``stop()``."""

    def __init__(self, platform: Platform, client: redis.Redis | None = None, *, revoke: Revoker | None = None,
                 batch: int = 500) -> None:
        self.platform = platform
        self.client = client or new_client(platform.settings.broker_url(), platform.settings)
        self.revoke = revoke or CeleryRevoker(platform)
        self.batch = batch
        self.callbacks = CallbackPump(Dispatcher(platform), self.client)
        self.loop = Loop("watchdog", platform.settings.watchdog_interval_s, self.check)

    def check(self) -> tuple[int, int]:
        """One pass: returns (tasks timed out, callbacks settled)."""
        return self.expire_overdue(), self.callbacks.drain(self.batch)

    def expire_overdue(self, now_s: float | None = None) -> int:
        now_s = time.time() if now_s is None else now_s
        keys = self.platform.keys
        due = self.client.zrangebyscore(keys.deadlines, "-inf", int(now_s * 1000), start=0, num=self.batch)
        expired = 0
        for raw in due:
            task_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            if self.expire(task_id):
                expired += 1
        return expired

    def expire(self, task_id: str) -> bool:
        """Mark ``task_id`` TIMED_OUT unless it already finished; True if this call did it."""
        p = self.platform
        record = p.status.get(self.client, task_id)
        if record is None or record.status.is_terminal:
            self.client.zrem(p.keys.deadlines, task_id)
            return False
        fields = record.fields
        timeout = fields.get("timeout_s", "?")
        won = p.status.transition(
            self.client, task_id, Status.TIMED_OUT, attempt=record.attempt,
            fields={"type": fields.get("type"), "service": fields.get("service"), "priority": fields.get("priority"),
                    "error": f"not finished within its timeout of {timeout}s (was {record.status.value})",
                    "error_type": "TaskTimeout"},
        )
        if not won:
            return False
        service = fields.get("service")
        log.warning("task %s (%s) timed out in %s", task_id, fields.get("type"), record.status.value)
        if service:
            if record.status in (Status.SCHEDULED, Status.RETRYING):
                p.delayed.remove(self.client, service, task_id)
            elif record.status is Status.STARTED:
                try:
                    self.revoke(service, task_id)
                except Exception as exc:  # the status is final already; a late result will be refused
                    log.warning("could not revoke timed-out task %s: %s", task_id, exc)
        return True

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()


class CeleryRevoker:
    """Revokes through Celery's remote control (the worker holding the task stops it): with the worker's own app
    for its service, with the bare control app of :mod:`meetingtasks.store.cancel` for any other."""

    def __init__(self, platform: Platform, app: Any = None) -> None:
        self.platform = platform
        self.apps: dict[str, Any] = {}
        if app is not None:
            self.apps[app.mt_service] = app

    def __call__(self, service: str, task_id: str) -> None:
        app = self.apps.get(service) or control_app(self.platform, service)
        revoke(app, task_id, terminate=True)


def worker_watchdog(app: Any) -> Watchdog:
    """The watchdog a worker of ``app``'s service runs on its service's Redis (revoking through ``app``)."""
    platform: Platform = app.mt_platform
    client = new_client(platform.settings.broker_url(app.mt_service), platform.settings)
    return Watchdog(platform, client, revoke=CeleryRevoker(platform, app))
