"""The dispatcher: the one path by which tasks enter the platform.

``dispatch`` validates the payload against the type's model and the size limit before anything is queued,
routes the type to its service's queue for the priority, records the status, and pushes the message
(or parks it in the delayed set) in one Redis round trip.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from meetingtasks.errors import InvalidPayload, MessageTooLarge, TaskFailed, TaskNotFound, WaitTimeout
from meetingtasks.message import encode_task_message, new_id
from meetingtasks.platform import Platform, get_platform
from meetingtasks.priority import Priority, queue_name
from meetingtasks.registry import REGISTRY, TaskTypeSpec
from meetingtasks.status import Status, StatusRecord


def validation_message(task_type: str, exc: ValidationError) -> str:
    """One line naming every failing field: ``user_register: payload.email: value is not a valid email``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"payload.{where}: {err['msg']}")
    return f"{task_type}: " + "; ".join(parts)


def validate_payload(spec: TaskTypeSpec, payload: Any) -> dict[str, Any]:
    """The payload as the JSON the handler will get, or :class:`InvalidPayload` naming the field."""
    if isinstance(payload, spec.payload_model):
        return payload.model_dump(mode="json")
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json")
    try:
        return spec.payload_model.model_validate(payload).model_dump(mode="json")
    except ValidationError as exc:
        raise InvalidPayload(validation_message(spec.name, exc)) from None


@dataclass(frozen=True)
class PreparedTask:
    """A validated, encoded task ready to be pushed in a pipeline."""

    task_id: str
    spec: TaskTypeSpec
    priority: Priority
    queue: str
    message: bytes
    due_s: float | None


class Dispatcher:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    # --- building ---------------------------------------------------------------------------------------
    def prepare(
        self,
        task_type: str,
        payload: Any,
        *,
        priority: Priority | str | None = None,
        delay: float | None = None,
        eta: datetime | None = None,
        headers: Mapping[str, Any] | None = None,
        task_id: str | None = None,
    ) -> PreparedTask:
        settings = self.platform.settings
        spec = REGISTRY.get(task_type)
        body = validate_payload(spec, payload)
        prio = Priority.parse(priority, settings.default_priority or spec.priority)
        queue = queue_name(spec.service, prio)
        due_s = self._due_time(delay, eta)
        task_id = task_id or new_id()
        now = time.time()
        # mt_enqueued_at: when the task becomes runnable, for the queue-wait metric.
        hdrs = {"mt_priority": prio.value, "mt_dispatched_at": now, "mt_enqueued_at": due_s or now}
        if headers:
            hdrs.update(headers)
        message = encode_task_message(task_id=task_id, task_name=spec.name, payload=body, queue=queue, headers=hdrs)
        if len(message) > settings.max_message_bytes:
            raise MessageTooLarge(
                f"{task_type}: the message is {len(message)} bytes, over the limit of "
                f"{settings.max_message_bytes} bytes (max_message_bytes); pass large data by reference"
            )
        return PreparedTask(task_id, spec, prio, queue, message, due_s)

    def _due_time(self, delay: float | None, eta: datetime | None) -> float | None:
        if delay is not None and eta is not None:
            raise InvalidPayload("give either delay or eta, not both")
        if eta is not None:
            if eta.tzinfo is None:
                raise InvalidPayload("eta must be timezone-aware (e.g. datetime.now(timezone.utc))")
            due = eta.astimezone(UTC).timestamp()
        elif delay is not None:
            if delay < 0:
                raise InvalidPayload(f"delay must be >= 0 seconds, got {delay}")
            due = time.time() + delay
        else:
            return None
        if due - time.time() > self.platform.settings.max_delay_s:
            raise InvalidPayload(f"due time is more than max_delay_s={self.platform.settings.max_delay_s}s away")
        return due if due > time.time() else None

    def enqueue(self, pipe: Any, task: PreparedTask) -> None:
        """Queue the status write and the push of ``task`` on ``pipe``."""
        p = self.platform
        status = Status.SCHEDULED if task.due_s is not None else Status.QUEUED
        p.status.transition(
            pipe,
            task.task_id,
            status,
            attempt=1,
            fields={"type": task.spec.name, "service": task.spec.service, "priority": task.priority.value,
                    "queue": task.queue, "created_at": repr(time.time())},
        )
        if task.due_s is None:
            pipe.lpush(task.queue, task.message)
        else:
            p.delayed.schedule(pipe, task.spec.service, task.task_id, task.queue, task.message, task.due_s)

    # --- public ---------------------------------------------------------------------------------------------
    def dispatch(
        self,
        task_type: str,
        payload: Any,
        *,
        priority: Priority | str | None = None,
        delay: float | None = None,
        eta: datetime | None = None,
        dedup_key: str | None = None,
    ) -> TaskHandle:
        task = self.prepare(task_type, payload, priority=priority, delay=delay, eta=eta)
        client = self.platform.redis(task.spec.service)
        if dedup_key is not None:
            key = self.platform.keys.dedup(dedup_key)
            if not client.set(key, task.task_id, nx=True, ex=self.platform.settings.dedup_ttl_s):
                existing = client.get(key)
                if existing is not None:
                    return TaskHandle(existing.decode() if isinstance(existing, bytes) else existing, self)
        with client.pipeline(transaction=False) as pipe:
            self.enqueue(pipe, task)
            pipe.execute()
        return TaskHandle(task.task_id, self, task.spec.name)

    def dispatch_batch(self, items: Iterable[Any]) -> Batch:
        """Send many tasks in one round trip per Redis server. Items are ``(type, payload)`` pairs or dicts
        with ``type``, ``payload`` and optionally ``priority``, ``delay``, ``eta``."""
        prepared = [self.prepare(**_batch_item(item)) for item in items]
        by_url: dict[str, list[PreparedTask]] = {}
        for task in prepared:
            by_url.setdefault(self.platform.settings.broker_url(task.spec.service), []).append(task)
        for tasks in by_url.values():
            client = self.platform.redis(tasks[0].spec.service)
            with client.pipeline(transaction=False) as pipe:
                for task in tasks:
                    self.enqueue(pipe, task)
                pipe.execute()
        return Batch(new_id(), [TaskHandle(t.task_id, self, t.spec.name) for t in prepared])

    def record(self, task_id: str) -> StatusRecord:
        for client in self._clients():
            rec = self.platform.status.get(client, task_id)
            if rec is not None:
                return rec
        raise TaskNotFound(f"no task with id {task_id!r} (unknown, or its status expired)")

    def _clients(self) -> list[Any]:
        seen: dict[str, Any] = {}
        for svc, url in self.platform.redis_urls().items():
            seen.setdefault(url, self.platform.redis(svc))
        return list(seen.values())


def _batch_item(item: Any) -> dict[str, Any]:
    if isinstance(item, Mapping):
        out = dict(item)
        out["task_type"] = out.pop("type", out.get("task_type"))
        return out
    if isinstance(item, Sequence) and len(item) == 2:
        return {"task_type": item[0], "payload": item[1]}
    raise InvalidPayload(f"batch item {item!r}: use (type, payload) or {{'type': ..., 'payload': ...}}")


@dataclass
class TaskHandle:
    """A dispatched task. ``status()`` compares equal to status names (``"SUCCEEDED"``)."""

    id: str
    dispatcher: Dispatcher = field(repr=False)
    type: str | None = None

    def info(self) -> StatusRecord:
        return self.dispatcher.record(self.id)

    def status(self) -> Status:
        return self.info().status

    def wait(self, timeout: float | None = 30.0, poll_s: float = 0.01) -> Any:
        """Block until the task finishes; return its result or raise :class:`TaskFailed`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                rec = self.info()
            except TaskNotFound:
                rec = None
            if rec is not None and rec.status.is_terminal:
                if rec.status is Status.SUCCEEDED:
                    return rec.result
                raise TaskFailed(self.id, rec.status.value, rec.error)
            if deadline is not None and time.monotonic() >= deadline:
                state = rec.status.value if rec else "unknown"
                raise WaitTimeout(f"task {self.id} not finished after {timeout}s (status {state})")
            time.sleep(poll_s)
            poll_s = min(poll_s * 1.5, 0.2)

    def cancel(self) -> Status:
        from meetingtasks.cancel import cancel_task

        return cancel_task(self.dispatcher.platform, self.id)


@dataclass
class Batch(Sequence[TaskHandle]):
    id: str
    handles: list[TaskHandle]

    def __getitem__(self, index: int) -> TaskHandle:  # type: ignore[override]
        return self.handles[index]

    def __len__(self) -> int:
        return len(self.handles)

    def status(self) -> dict[str, int]:
        """How many members are in each status."""
        counts: dict[str, int] = {}
        for handle in self.handles:
            try:
                name = handle.status().value
            except TaskNotFound:
                name = "UNKNOWN"
            counts[name] = counts.get(name, 0) + 1
        return counts


def default_dispatcher() -> Dispatcher:
    return Dispatcher(get_platform())


def dispatch(
    task_type: str,
    payload: Any,
    *,
    priority: Priority | str | None = None,
    delay: float | None = None,
    eta: datetime | None = None,
    dedup_key: str | None = None,
) -> TaskHandle:
    """Queue one task of ``task_type``; see :meth:`Dispatcher.dispatch`."""
    return default_dispatcher().dispatch(
        task_type, payload, priority=priority, delay=delay, eta=eta, dedup_key=dedup_key
    )


def dispatch_batch(items: Iterable[Any]) -> Batch:
    return default_dispatcher().dispatch_batch(items)
