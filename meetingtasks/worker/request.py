"""Celery's request with the hard time limit ending in the dead-letter queue (the child is gone by then)."""

from __future__ import annotations

from celery.worker.request import Request

from meetingtasks.status import Status
from meetingtasks.worker.quarantine import quarantine_envelope


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
