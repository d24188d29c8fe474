"""Celery's request with the hard time limit ending in the dead-letter queue (the child is gone by then), and
a prefork child's task outcomes carried back to the parent with the task's result (see worker.outcomes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from weakref import ref

from celery.app.trace import fast_trace_task, trace_task_ret
from celery.exceptions import InvalidTaskError, TaskRevokedError
from celery.utils.functional import maybe
from celery.utils.saferepr import saferepr
from celery.worker.request import Request

from meetingtasks.core.message import call_problem, payload_from_args
from meetingtasks.core.secret_fields import mask_payload
from meetingtasks.store.status import Status
from meetingtasks.worker.outcomes import sink_for, take_child_outcomes
from meetingtasks.worker.quarantine import quarantine_envelope
from meetingtasks.worker.transport import write_outcomes


def run_and_collect(trace: Callable[..., tuple[Any, ...]], *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """Run Celery's tracer in the pool and return its ``(failed, retval, runtime)`` with, as a fourth item, the task
    outcomes a prefork child buffered meanwhile (none in the consumer's own process, whose channel takes them)."""
    result = trace(*args, **kwargs)
    outcomes = take_child_outcomes()
    return (*result, outcomes) if outcomes else result


class PlatformRequest(Request):  # type: ignore[misc]
    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Celery's strategy builds a subclass of this class per task type (``create_request_cls``) whose own
        ``execute_using_pool`` and ``on_success`` would bypass ours: put ours back over them, keeping theirs for
        the rest of the work."""
        super().__init_subclass__(**kwargs)
        celery_on_success = cls.__dict__.get("on_success")
        if celery_on_success is not None:
            def on_success(self: PlatformRequest, failed__retval__runtime: tuple[Any, ...], **kw: Any) -> Any:
                return celery_on_success(self, self._mt_take_outcomes(failed__retval__runtime), **kw)

            cls.on_success = on_success  # type: ignore[method-assign]
        if "execute_using_pool" in cls.__dict__:
            cls.execute_using_pool = PlatformRequest.execute_using_pool  # type: ignore[method-assign]

    def execute_using_pool(self, pool: Any, **kwargs: Any) -> Any:
        """Celery's, with the tracer wrapped by :func:`run_and_collect`."""
        task_id = self.task_id
        if self.revoked():
            raise TaskRevokedError(task_id)
        time_limit, soft_time_limit = self.time_limits
        trace = fast_trace_task if self._app.use_fast_trace_task else trace_task_ret
        result = pool.apply_async(
            run_and_collect,
            args=(trace, self._type, task_id, self._request_dict, self._body, self._content_type,
                  self._content_encoding),
            accept_callback=self.on_accepted,
            timeout_callback=self.on_timeout,
            callback=self.on_success,
            error_callback=self.on_failure,
            soft_timeout=soft_time_limit or self._task.soft_time_limit,
            timeout=time_limit or self._task.time_limit,
            correlation_id=task_id,
        )
        self._apply_result = maybe(ref, result)
        return result

    def on_success(self, failed__retval__runtime: tuple[Any, ...], **kwargs: Any) -> Any:
        return super().on_success(self._mt_take_outcomes(failed__retval__runtime), **kwargs)

    def _mt_take_outcomes(self, result: tuple[Any, ...]) -> tuple[Any, ...]:
        """Hand a prefork child's outcomes (see :func:`run_and_collect`) to the consuming channel, ahead of the ack
        that Celery sends next; they are recorded together by its next fetch."""
        if len(result) != 4:
            return result
        outcomes: list[list[str]] = result[3]
        service = self._task.spec.service
        sink = sink_for(service)
        if sink is not None:
            for entry in outcomes:
                sink.buffer_outcome(entry)
        else:  # no consuming channel in this process (never the case in a worker): write them now
            write_outcomes(self._task.platform, service, outcomes)
        return result[:3]

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
