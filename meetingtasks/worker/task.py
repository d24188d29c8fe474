"""The task base class every task type runs on: validation, status, retries, dead letters, poison guard.

One run, in the worker process that executes it:

1. one round trip: count this delivery, read the cancel flag, record STARTED (the worker's fetch does it
   atomically with the pop; the delivery count is the field ``deliveries`` of the status record);
2. cancelled -> CANCELLED, skipped; delivered more than ``max_deliveries`` times (its worker kept dying)
   -> dead-lettered without running;
3. payload invalid -> dead-lettered at once with the validation message;
4. handler returns -> SUCCEEDED with the result;
   handler raises :class:`PermanentError` -> FAILED at once;
   handler raises :class:`~meetingtasks.store.cancel.TaskCancelled` (it saw its cancel flag) -> CANCELLED;
   handler raises anything else -> RETRYING, the next attempt parked in the delayed set with exponential
   backoff and full jitter; with no retries left -> dead-lettered with the traceback;
   soft time limit hit -> TIMED_OUT and dead-lettered.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import redis
from celery import Task
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded
from pydantic import ValidationError

from meetingtasks.core.backoff import RetryPolicy, backoff_delay_s, retries_left
from meetingtasks.core.errors import InfrastructureError, InvalidPayload, PermanentError, validation_message
from meetingtasks.core.message import dumps, encode_task_message, payload_from_args, task_body
from meetingtasks.core.priority import Priority, parse_queue
from meetingtasks.core.registry import TaskTypeSpec
from meetingtasks.core.secret_fields import (
    UndecryptableSecret,
    keyring,
    open_payload,
    require_keyring,
    seal_and_mask_result,
    seal_payload,
)
from meetingtasks.core.signing import signer_for
from meetingtasks.lua import execute_idempotent
from meetingtasks.store.cancel import CANCEL_RECHECK_S, TaskCancelled
from meetingtasks.store.deadletter import DeadLetter, format_traceback
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status
from meetingtasks.worker.outcomes import DEFERRED_START, outcome_entry, sink_for
from meetingtasks.worker.profiling import GATE, profiled
from meetingtasks.worker.ratelimit import defer_over_rate_limit

log = logging.getLogger(__name__)
T = TypeVar("T")
# Every Redis error of a bookkeeping write is infrastructure, not a task failure: besides lost connections, a
# server that refuses writes for a while (OOM with noeviction, READONLY during a failover, BUSY, NOSCRIPT) must
# neither fail the task nor get its message acked. Our own writes do not fail for other reasons.
_REDIS_OUTAGE = (redis.RedisError, InfrastructureError)
_WORKER = f"{socket.gethostname()}:{os.getpid()}"


class PoisonMessage(Exception):
    """Raised in place of running a task whose deliveries keep killing its worker."""


class PlatformTask(Task):  # type: ignore[misc]
    """Celery task class for a registered task type. ``spec`` and ``platform`` are set per type."""

    spec: ClassVar[TaskTypeSpec]
    platform: ClassVar[Platform]
    typing = False
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    # Expected outcomes: Celery logs them without a traceback.
    throws = (PermanentError, InvalidPayload, PoisonMessage, UndecryptableSecret)
    Request = "meetingtasks.worker.request:PlatformRequest"

    # --- helpers ---------------------------------------------------------------------------------------------
    @property
    def policy(self) -> RetryPolicy:
        base = self.spec.retry_policy or self.platform.settings.retry_policy()
        if self.spec.max_retries is not None and self.spec.retry_policy is None:
            return RetryPolicy(self.spec.max_retries, base.base_s, base.max_s, base.jitter)
        return base

    def _priority(self, req: Any = None) -> Priority:
        if req is None:
            req = self.request
        info = req.delivery_info or {}
        parsed = parse_queue(info.get("routing_key") or "")
        if parsed is not None:
            return parsed[1]
        return Priority.parse(getattr(req, "mt_priority", None), self.spec.priority)

    def _identity(self, req: Any = None) -> dict[str, Any]:
        """Fields every status transition carries, so listeners (gateway, exporter) need no lookup (a new dict each
        call: callers add to it; the priority is worked out once per run, on the request). ``req``: the current
        request when the caller holds it (``self.request`` is a thread-local lookup, about 1 us each)."""
        if req is None:
            req = self.request
        priority = getattr(req, "mt_identity_priority", None)
        if priority is None:
            priority = req.mt_identity_priority = self._priority(req).value
        return {"type": self.spec.name, "service": self.spec.service, "priority": priority}

    def _queue(self) -> str:
        info = self.request.delivery_info or {}
        return str(info.get("routing_key") or f"{self.spec.service}.{self._priority().value}")

    def durably(self, what: str, write: Callable[[], T]) -> T:
        """Run a bookkeeping write, retrying through a short Redis outage or a time Redis refuses writes.

        If Redis stays away (or keeps refusing) longer than ``redis_outage_grace_s`` the message is handed back
        (rejected with requeue; if even that fails it stays in the unacked set and the restore sweep brings it
        back, see ``QoS.reject`` in :mod:`meetingtasks.worker.transport`), because acknowledging it now would lose
        the task.
        """
        deadline = time.monotonic() + self.platform.settings.redis_outage_grace_s
        pause = 0.05
        while True:
            try:
                self.apply_buffered_start()  # this write bypasses the outcome buffer: the task's STARTED goes first
                return write()
            except _REDIS_OUTAGE as exc:
                if time.monotonic() >= deadline:
                    log.warning("task %s: Redis unavailable while %s (%s); handing the message back",
                                self.request.id, what, exc)
                    raise Reject(f"Redis unavailable while {what}", requeue=True) from exc
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    # --- the run --------------------------------------------------------------------------------------------
    def execute(self, args: Any, kwargs: Any) -> Any:
        p = self.platform
        req = self.request
        task_id: str = req.id
        attempt = int(req.retries or 0) + 1
        raw_payload = payload_from_args(args, kwargs)
        secret = self.spec.secret_fields
        if secret:
            # From here on the payload is kept sealed (retry, dead letter, deferral), even one a foreign producer
            # sent in plain text; only the handler gets it opened.
            raw_payload = seal_payload(secret, raw_payload, require_keyring(p.settings))
        if self.spec.rate_limit_per_s and defer_over_rate_limit(self, raw_payload):
            raise Ignore()  # back in the delayed set until its slot (meetingtasks.worker.ratelimit)
        # On the request (thread-local), not on the task object that all pool threads share.
        req.mt_started_at = started_at = time.time()
        enqueued_at = getattr(req, "mt_enqueued_at", None)
        wait_s = max(0.0, started_at - float(enqueued_at)) if enqueued_at else None

        def begin() -> list[Any]:
            with p.redis(self.spec.service).pipeline(transaction=False) as pipe:
                p.status.transition(
                    pipe, task_id, Status.STARTED, attempt=attempt, now=started_at,
                    fields={**self._identity(), "worker": _WORKER, "wait_s": wait_s},
                )
                # After the transition, which gives a new record its status and lifetime.
                pipe.hincrby(p.keys.status(task_id), "deliveries", 1)
                pipe.get(p.keys.cancel(task_id))
                return list(pipe.execute())

        fetched = getattr(req, "mt_fetch_started", None)
        if fetched is not None:
            # The worker's atomic fetch already counted the delivery, read the flag and recorded STARTED.
            deliveries, started = req.mt_fetch_deliveries, fetched
            cancelled = "1" if req.mt_fetch_cancelled else None
            flags_at = getattr(req, "mt_fetch_flags_at", None)
            if cancelled is None and started == DEFERRED_START and flags_at is not None \
                    and started_at - float(flags_at) > CANCEL_RECHECK_S:
                # Fetched unstarted and held since its flag was read (a job sent ahead waited in its prefork
                # process's pipe behind a task that ran on): read it again, as the worker does for what it holds.
                # (A threads worker's tasks carry no flags_at: they wait in no queue, see Channel._run_batch.)
                flag = self.durably("reading the cancel flag",
                                    lambda: p.redis(self.spec.service).get(p.keys.cancel(task_id)))
                cancelled = None if flag is None else "1"
        else:  # a message taken without the fetch script (foreign producer, idle wake-up)
            started, deliveries, cancelled = self.durably("recording the start", begin)

        if cancelled is not None:
            self.durably("recording the cancel", lambda: p.status.transition(
                p.redis(self.spec.service), task_id, Status.CANCELLED, attempt=attempt, fields=self._identity()))
            log.info("task %s (%s) was cancelled; skipped", task_id, self.spec.name)
            raise Ignore()
        if started == 0:
            # Already terminal: cancelled or timed out meanwhile, or a duplicate delivery of a finished task.
            log.info("task %s (%s) already finished; duplicate delivery skipped", task_id, self.spec.name)
            raise Ignore()
        if int(deliveries) > p.settings.max_deliveries:
            exc = PoisonMessage(
                f"delivered {deliveries} times without finishing (max_deliveries={p.settings.max_deliveries}); "
                "its worker probably died each time"
            )
            self.dead_letter(exc, raw_payload, attempt, status=Status.DEAD_LETTERED)
            raise exc
        if started == DEFERRED_START:
            self._record_deferred_start(req, attempt, started_at, wait_s)

        try:
            payload = self.spec.payload_model.model_validate(
                open_payload(secret, raw_payload, keyring(p.settings)) if secret else raw_payload)
        except UndecryptableSecret as uerr:
            # Dead-lettered with the ciphertext kept: replayed once the right key is configured, it runs.
            self.dead_letter(uerr, raw_payload, attempt, status=Status.DEAD_LETTERED)
            raise uerr from None
        except ValidationError as verr:
            exc2 = InvalidPayload(validation_message(self.spec.name, verr))
            self.dead_letter(exc2, raw_payload, attempt, status=Status.DEAD_LETTERED)
            raise exc2 from None

        handler = self.spec.handler
        if GATE.wanted(p, self.spec.name):  # the whole cost when no profile is requested: a clock read, a lookup
            handler = profiled(p, self.spec.name, task_id, handler)
        try:
            result = handler(payload)
        except TaskCancelled as cerr:  # the handler saw its cancel flag (meetingtasks.raise_if_cancelled)
            self.finish(Status.CANCELLED, attempt, error=cerr, req=req)
            raise Ignore() from None
        except PermanentError as perr:
            self.finish(Status.FAILED, attempt, error=perr, req=req)
            raise
        except SoftTimeLimitExceeded as terr:
            self.dead_letter(terr, raw_payload, attempt, status=Status.TIMED_OUT,
                             message=f"exceeded its time limit of {self.soft_time_limit}s")
            raise
        except (Ignore, Reject):
            raise
        except Exception as err:  # every other handler failure is retryable
            self.retry_or_dead_letter(err, raw_payload, attempt)
            raise
        # Secrets in the result are sealed before it is stored; Celery (events, Flower, logs) gets it masked.
        stored, shown = seal_and_mask_result(
            result, lambda: require_keyring(p.settings, f"{self.spec.name} returned a secret"))
        self.finish(Status.SUCCEEDED, attempt, result=stored, req=req)
        return shown

    def _record_deferred_start(self, req: Any, attempt: int, started_at: float, wait_s: float | None) -> None:
        """STARTED of a task fetched in a solo worker's batch behind others: written now that it runs, with the
        next fetch (or sooner, by the channel's timer, if the task runs long)."""
        fields: dict[str, Any] = {**self._identity(req), "worker": _WORKER, "wait_s": wait_s}
        entry = outcome_entry(req.id, Status.STARTED, attempt, fields, started_at)
        sink = sink_for(self.spec.service)
        if sink is not None:
            sink.buffer_outcome(entry)
            req.mt_start_buffered = True
            return
        p = self.platform
        client = p.redis(self.spec.service)
        self.durably("recording the start", lambda: p.status.transition(
            client, req.id, Status.STARTED, attempt=attempt, now=started_at, fields=fields))

    def apply_buffered_start(self) -> None:
        """Write this task's buffered STARTED now: a status write that bypasses the buffer (every :meth:`durably`
        write: retry, dead letter, cancel; a progress report) must not land before it."""
        if getattr(self.request, "mt_start_buffered", False):
            sink = sink_for(self.spec.service)
            if sink is not None and not sink.flush_acks():
                raise InfrastructureError(f"task {self.request.id}: its STARTED could not be recorded yet")
            self.request.mt_start_buffered = False

    def finish(self, status: Status, attempt: int, *, result: Any = None, error: BaseException | None = None,
               req: Any = None) -> None:
        p = self.platform
        if req is None:
            req = self.request
        fields: dict[str, Any] = {**self._identity(req), "run_s": self._run_s(req)}
        if status is Status.SUCCEEDED:
            fields["result"] = result
        if error is not None:
            fields["error"] = str(error) or type(error).__name__
            fields["error_type"] = type(error).__name__
        sink = sink_for(self.spec.service)
        if sink is not None:  # ran in the consumer's process: recorded with the ack (meetingtasks.worker.outcomes)
            sink.buffer_outcome(outcome_entry(req.id, status, attempt, fields, time.time()))
            return
        client = p.redis(self.spec.service)
        task_id = req.id

        def build(pipe: Any) -> None:
            p.status.transition(pipe, task_id, status, attempt=attempt, fields=fields, by_sha=True)

        def write() -> None:
            execute_idempotent(client, build)

        self.durably(f"recording {status.value}", write)

    def _run_s(self, req: Any = None) -> float | None:
        if req is None:
            req = self.request
        started = getattr(req, "mt_started_at", None)
        return None if started is None else time.time() - started

    def retry_or_dead_letter(self, exc: Exception, raw_payload: Any, attempt: int) -> None:
        policy = self.policy
        retries_done = attempt - 1
        if not retries_left(retries_done, policy):
            self.dead_letter(exc, raw_payload, attempt, status=Status.DEAD_LETTERED)
            return
        delay_s = backoff_delay_s(retries_done, policy)
        p = self.platform
        req = self.request
        headers = {k: getattr(req, k) for k in ("mt_priority", "mt_dispatched_at") if getattr(req, k, None)}
        headers["mt_first_failure_at"] = getattr(req, "mt_first_failure_at", None) or time.time()
        headers["mt_enqueued_at"] = time.time() + delay_s
        message = encode_task_message(
            task_id=req.id, task_name=self.spec.name, payload=raw_payload, queue=self._queue(),
            retries=attempt, headers=headers, root_id=req.root_id, parent_id=req.parent_id,
            signer=signer_for(p.settings),
        )
        client = p.redis(self.spec.service)
        fields = {**self._identity(), "error": str(exc) or type(exc).__name__, "error_type": type(exc).__name__,
                  "retry_in_s": delay_s, "run_s": self._run_s()}

        def build(pipe: Any) -> None:
            p.delayed.schedule(pipe, self.spec.service, req.id, self._queue(), message, time.time() + delay_s)
            p.status.transition(pipe, req.id, Status.RETRYING, attempt=attempt, fields=fields, by_sha=True)

        def write() -> None:
            execute_idempotent(client, build)

        self.durably("scheduling the retry", write)
        # Celery's Retry marks the run RETRY (task-retried for Flower) and acks it; the next attempt is
        # already parked in the delayed set, never held in worker memory.
        raise Retry(exc=exc, when=delay_s) from exc

    def dead_letter(
        self, exc: BaseException, raw_payload: Any, attempt: int, *, status: Status, message: str | None = None
    ) -> None:
        p = self.platform
        req = self.request
        error = message or str(exc) or type(exc).__name__
        now = time.time()
        # Kept for replay: signed like any message when signing is on, or the workers would refuse the replay.
        body, content_type = task_body(raw_payload, task_name=self.spec.name, task_id=req.id,
                                       signer=signer_for(p.settings))
        envelope = {
            "body": body,
            "content-encoding": "utf-8",
            "content-type": content_type,
            "headers": {"lang": "py", "task": self.spec.name, "id": req.id, "retries": 0,
                        "root_id": req.root_id or req.id, "parent_id": req.parent_id,
                        "mt_priority": self._priority().value},
            "properties": {"correlation_id": req.id, "delivery_mode": 2, "priority": 0, "delivery_tag": req.id,
                           "delivery_info": {"exchange": "", "routing_key": self._queue()}},
        }
        letter = DeadLetter(
            id=req.id, service=self.spec.service, reason=type(exc).__name__, error=error, task_id=req.id,
            task_type=self.spec.name, priority=self._priority().value, queue=self._queue(), payload=raw_payload,
            traceback=format_traceback(exc), attempts=attempt,
            first_failure_at=float(getattr(req, "mt_first_failure_at", None) or now), last_failure_at=now,
            worker=_WORKER, message=dumps(envelope).decode(),
        )
        client = p.redis(self.spec.service)
        fields = {**self._identity(), "error": error, "error_type": type(exc).__name__, "run_s": self._run_s()}

        def build(pipe: Any) -> None:
            if p.settings.dead_letter_enabled:
                p.dead_letters.add(pipe, letter)
            p.status.transition(pipe, req.id, status, attempt=attempt, fields=fields, by_sha=True)

        acks = p.replica_acks
        replicated = (acks, lambda acked: acks.note(acked, f"dead letter of {req.id}")) if acks else None

        def write() -> None:
            execute_idempotent(client, build, replicated)

        self.durably("filing the dead letter", write)
        log.error("task %s (%s) %s after %d attempt(s): %s", req.id, self.spec.name, status.value, attempt, error)
