"""Celery's request with the hard time limit ending in the dead-letter queue (the child is gone by then), and a
hand-back that Redis refuses leaving the message leased instead of failing."""

from __future__ import annotations

import logging

import redis
from celery.worker.request import Request

from meetingtasks.status import Status
from meetingtasks.worker.quarantine import quarantine_envelope

log = logging.getLogger(__name__)


class PlatformRequest(Request):  # type: ignore[misc]
    def on_timeout(self, soft: bool, timeout: float) -> None:
        if not soft:
            platform = getattr(self.task, "platform", None)
            raw = getattr(self._message, "_raw", None)
            if platform is not None and isinstance(raw, dict):
                quarantine_envelope(
                    platform, self.task.spec.service, raw, "TimeLimitExceeded",
                    f"killed after exceeding its hard time limit of {timeout}s", status=Status.TIMED_OUT,
                )
        super().on_timeout(soft, timeout)

    def reject(self, requeue: bool = False) -> None:
        """Hand the message back; if Redis refuses that too (out of memory, read-only, unreachable) leave it as it
        is: still in the unacked set, so the restore sweep brings it back once its lease runs out. kombu removes and
        requeues it in one transaction, so a refused hand-back changes nothing. Raising instead would kill the
        worker (stock Celery only catches connection errors here)."""
        try:
            super().reject(requeue)
        except redis.RedisError as exc:
            self.acknowledged = True  # for Celery: this request is done with; the message is not
            forget = getattr(self._message.channel, "forget_delivery", None)
            if forget is not None:
                forget(self._message.delivery_tag)
            log.warning("task %s: could not hand its message back (%s); the restore sweep will once its lease ends",
                        self.id, exc)
