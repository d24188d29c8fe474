"""Celery's request with the hard time limit ending in the dead-letter queue (the child is gone by then)."""

from __future__ import annotations

from typing import Any

from celery.exceptions import InvalidTaskError
from celery.utils.saferepr import saferepr
from celery.worker.request import Request

from meetingtasks.message import call_problem, payload_from_args
from meetingtasks.secret_fields import mask_payload
from meetingtasks.status import Status
from meetingtasks.worker.quarantine import quarantine_envelope


class PlatformRequest(Request):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The body's parts, checked here in the consumer (where a refusal is dead-lettered) because the pool reads
        # them outside the task: a kwargs list or an embed string would leave the task STARTED with its message
        # acked, or hold a pool slot and its message for good.
        problem = call_problem(*self._Request__payload)
        if problem is not None:
            raise InvalidTaskError(problem)
        spec = getattr(self._task, "spec", None)
        secret = spec.secret_fields if spec is not None else ()
        self._mt_masked: list[Any] | None = None
        if secret:
            # Celery shows argsrepr/kwargsrepr in task events (Flower) and its logs: secrets as ***, whoever
            # produced the message (a foreign producer's argsrepr holds its plain text).
            self._mt_masked = [mask_payload(secret, payload_from_args(self._args, self._kwargs))]
            self._argsrepr = self._request_dict["argsrepr"] = saferepr(self._mt_masked)
            self._kwargsrepr = self._request_dict["kwargsrepr"] = "{}"

    def info(self, safe: bool = False) -> dict[str, Any]:
        """What ``celery inspect active/reserved/query_task`` (and Flower's worker pages) show: secrets as ***."""
        out: dict[str, Any] = super().info(safe=safe)
        if self._mt_masked is not None:
            out["args"], out["kwargs"] = (self._argsrepr, self._kwargsrepr) if safe else (self._mt_masked, {})
        return out

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
