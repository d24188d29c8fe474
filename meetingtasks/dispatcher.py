"""The dispatcher: the one path by which tasks enter the platform.

``dispatch`` validates the payload against the type's model and the size limit before anything is queued,
routes the type to its service's queue for the priority, records the status, and pushes the message
(or parks it in the delayed set) in one Redis round trip. ``dispatch_batch`` sends any number of tasks in
one round trip per Redis server.

Options recorded with the status (so whoever ends the task honours them, see :mod:`meetingtasks.status`):
``timeout`` (seconds from when the task is due; the watchdog marks it TIMED_OUT after that),
``on_success``/``on_failure`` (task types dispatched with the outcome, :mod:`meetingtasks.callbacks`), and
a batch's ``on_complete``. ``dedup_key``: a second dispatch with the same key within ``dedup_ttl_s`` returns
the first task's handle and queues nothing (one ``SET NX`` decides, however many callers race).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from pydantic import BaseModel, ValidationError

from meetingtasks import tracing
from meetingtasks.callbacks import callback_fields
from meetingtasks.errors import (
    BrokerUnavailable,
    DispatchError,
    InvalidPayload,
    MessageTooLarge,
    TaskFailed,
    TaskNotFound,
    WaitTimeout,
)
from meetingtasks.lua import LuaScript, execute_idempotent
from meetingtasks.message import encode_task_message, new_id
from meetingtasks.platform import Platform, get_platform
from meetingtasks.priority import Priority, queue_name
from meetingtasks.registry import REGISTRY, TaskTypeSpec
from meetingtasks.signing import signer_for
from meetingtasks.status import Status, StatusRecord
from meetingtasks.wake import WAKE_LUA, push_wake

#: Tasks per batch script call: bounds how long one call holds Redis (about 10 ms).
BATCH_CHUNK = 1000

# The batch path: the first transition (QUEUED) of many new tasks and their pushes, in one script call. A new
# record has no history and cannot be terminal, so this is StatusStore.transition without its guards: one
# HSET (history included), EXPIRE, PUBLISH; an optional deadline; LPUSH. Two arguments per task keep packing
# cheap for the client; the event is assembled here from identifier-safe parts (see _SAFE). KEYS: deadlines.
# ARGV: status key prefix, time_s, ttl_s, channel, history line, n, n common field/value strings, then per
# task: "id|type|queue|deadline ms or empty|k", the message, k field/value strings.
_ENQUEUE_MANY = LuaScript(
    WAKE_LUA
    + """
local woken = {}
local common_n = tonumber(ARGV[6])
local common = {unpack(ARGV, 7, 6 + common_n)}
local i = 7 + common_n
while i <= #ARGV do
  local id, ty, q, dl, k = string.match(ARGV[i], '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|(%d+)$')
  local svc, prio = string.match(q, '^(.*)%.([^.]*)$')
  local skey = ARGV[1] .. id
  redis.call('HSET', skey, 'status', 'QUEUED', 'updated_at', ARGV[2], 'attempt', '1', 'history', ARGV[5],
             'type', ty, 'service', svc, 'priority', prio, 'queue', q, 'created_at', ARGV[2], unpack(common))
  k = tonumber(k)
  if k > 0 then redis.call('HSET', skey, unpack(ARGV, i + 2, i + 1 + k)) end
  redis.call('EXPIRE', skey, ARGV[3])
  redis.call('PUBLISH', ARGV[4], '{"op":"status","id":"' .. id .. '","status":"QUEUED","time":' .. ARGV[2] ..
             ',"attempt":1,"type":"' .. ty .. '","service":"' .. svc .. '","priority":"' .. prio .. '"}')
  if dl ~= '' then redis.call('ZADD', KEYS[1], dl, id) end
  -- A service's first token goes before its first message: Redis serves waiting workers key by key in the
  -- order the keys became ready, and a worker must be woken by the token, not handed the message by BRPOP.
  if not woken[svc] then mt_wake(KEYS[2] .. svc, 1); woken[svc] = 0 end
  redis.call('LPUSH', q, ARGV[i + 1])
  woken[svc] = woken[svc] + 1
  i = i + 2 + k
end
for svc, n in pairs(woken) do if n > 1 then mt_wake(KEYS[2] .. svc, n - 1) end end
return 1
"""
)
#: Strings the batch script may put into its event JSON and its "|"-separated task line as they are.
_SAFE = re.compile(r"^[A-Za-z0-9_.:-]+$")


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
    deadline_s: float | None = None
    fields: dict[str, str] = field(default_factory=dict)


class Dispatcher:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    # --- building ---------------------------------------------------------------------------------------
    def prepare(
        self,
        task_type: str | TaskTypeSpec,
        payload: Any,
        *,
        priority: Priority | str | None = None,
        delay: float | None = None,
        eta: datetime | None = None,
        headers: Mapping[str, Any] | None = None,
        task_id: str | None = None,
        timeout: float | None = None,
        on_success: str | None = None,
        on_failure: str | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> PreparedTask:
        """Validate and encode one task; raises a :class:`DispatchError` naming the problem."""
        settings = self.platform.settings
        spec = task_type if isinstance(task_type, TaskTypeSpec) else REGISTRY.get(task_type)
        body = validate_payload(spec, payload)
        prio = Priority.parse(priority, settings.default_priority or spec.priority)
        queue = queue_name(spec.service, prio)
        due_s = self._due_time(delay, eta)
        task_id = task_id or new_id()
        now = time.time()
        extra = callback_fields(on_success, on_failure)
        if fields:
            extra.update(fields)
        deadline_s = None
        if timeout is not None:
            if timeout <= 0:
                raise InvalidPayload(f"{spec.name}: timeout must be > 0 seconds, got {timeout}")
            deadline_s = (due_s or now) + timeout
            extra["deadline"] = repr(deadline_s)
            extra["timeout_s"] = repr(float(timeout))
        # mt_enqueued_at: when the task becomes runnable, for the queue-wait metric.
        hdrs = {"mt_priority": prio.value, "mt_dispatched_at": now, "mt_enqueued_at": due_s or now}
        hdrs.update(tracing.dispatch_headers(spec.name, task_id, queue))  # W3C trace context, when tracing
        if headers:
            hdrs.update(headers)
        message = encode_task_message(task_id=task_id, task_name=spec.name, payload=body, queue=queue, headers=hdrs,
                                      signer=signer_for(settings))
        if len(message) > settings.max_message_bytes:
            raise MessageTooLarge(
                f"{spec.name}: the message is {len(message)} bytes, over the limit of "
                f"{settings.max_message_bytes} bytes (max_message_bytes); pass large data by reference"
            )
        return PreparedTask(task_id, spec, prio, queue, message, due_s, deadline_s, extra)

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
                    "queue": task.queue, "created_at": repr(time.time()), **task.fields},
        )
        if task.deadline_s is not None:
            pipe.zadd(p.keys.deadlines, {task.task_id: int(task.deadline_s * 1000)})
        if task.due_s is None:
            push_wake(pipe, p.keys, task.spec.service)  # before the message: see meetingtasks.wake
            pipe.lpush(task.queue, task.message)
        else:
            p.delayed.schedule(pipe, task.spec.service, task.task_id, task.queue, task.message, task.due_s)

    def enqueue_many(self, pipe: Any, tasks: Sequence[PreparedTask], common: Mapping[str, str] | None = None,
                     *, by_sha: bool = False) -> None:
        """Queue the status writes and pushes of new ``tasks`` on ``pipe``, in batch script calls of
        :data:`BATCH_CHUNK` tasks. ``common``: status fields every task gets (each task's own ``fields`` are
        written too). Delayed tasks, and names the script cannot embed as they are, go one by one."""
        p = self.platform
        now = time.time()
        common = dict(common or {})
        fast = [t for t in tasks if t.due_s is None and _SAFE.match(t.spec.name) and _SAFE.match(t.task_id)]
        for task in tasks:
            if task.due_s is not None or not (_SAFE.match(task.spec.name) and _SAFE.match(task.task_id)):
                self.enqueue(pipe, replace(task, fields={**common, **task.fields}))
        head: list[Any] = [p.keys.status(""), repr(now), p.status.ttl_s, p.keys.status_channel,
                           f"QUEUED {now!r} 1\n", 2 * len(common)]
        for name, value in common.items():
            head += [name, value]
        for start in range(0, len(fast), BATCH_CHUNK):
            args = list(head)
            for task in fast[start:start + BATCH_CHUNK]:
                own = task.fields
                deadline = "" if task.deadline_s is None else int(task.deadline_s * 1000)
                args += [f"{task.task_id}|{task.spec.name}|{task.queue}|{deadline}|{2 * len(own)}", task.message]
                for name, value in own.items():
                    args += [name, value]
            _ENQUEUE_MANY.queue(pipe, [p.keys.deadlines, p.keys.wake("")], args, by_sha=by_sha)

    # --- public ---------------------------------------------------------------------------------------------
    def dispatch(
        self,
        task_type: str | TaskTypeSpec,
        payload: Any,
        *,
        priority: Priority | str | None = None,
        delay: float | None = None,
        eta: datetime | None = None,
        dedup_key: str | None = None,
        timeout: float | None = None,
        on_success: str | None = None,
        on_failure: str | None = None,
        task_id: str | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> TaskHandle:
        """Queue one task and return its handle; see the module docstring for the options.

        ``task_id`` and ``fields`` (extra status fields, e.g. the gateway's ``client``) are for platform parts.
        """
        task = self.prepare(task_type, payload, priority=priority, delay=delay, eta=eta, task_id=task_id,
                            timeout=timeout, on_success=on_success, on_failure=on_failure, fields=fields)
        client = self.platform.redis(task.spec.service)
        if dedup_key is not None:
            key = self.platform.keys.dedup(dedup_key)
            if not self._send(client, lambda pipe: pipe.set(key, task.task_id, nx=True,
                                                            ex=self.platform.settings.dedup_ttl_s))[0]:
                existing = client.get(key)
                if existing is not None:
                    owner = existing.decode() if isinstance(existing, bytes) else str(existing)
                    return TaskHandle(owner, self, task.spec.name)
        # One script call by SHA: if the server lost its script cache nothing but wake tokens (harmless) was
        # written, so the pipeline runs again after loading the script.
        self._send(client, lambda pipe: self.enqueue_many(pipe, [task], by_sha=True))
        return TaskHandle(task.task_id, self, task.spec.name)

    def _send(self, client: Any, build: Callable[[Any], object]) -> list[Any]:
        """Execute one pipeline built by ``build``; while Redis refuses connections, keep trying for
        ``dispatch_retry_s`` (nothing was sent, so nothing can be queued twice), then raise
        :class:`BrokerUnavailable`. A connection lost mid-request is not retried: the task may be queued."""
        deadline = time.monotonic() + self.platform.settings.dispatch_retry_s
        pause = 0.05
        while True:
            try:
                return execute_idempotent(client, build)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                where = _redacted(self.platform.settings.broker_url())
                if "connecting to" not in str(exc):
                    raise BrokerUnavailable(
                        f"lost the connection to Redis at {where} while queuing ({exc}); the task may or may not "
                        "be queued: check with `meetingtasks status ID`"
                    ) from None
                if time.monotonic() >= deadline:
                    raise BrokerUnavailable(
                        f"cannot reach Redis at {where} ({exc}); nothing was queued "
                        f"(tried for dispatch_retry_s={self.platform.settings.dispatch_retry_s}s)"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def dispatch_batch(self, items: Iterable[Any], *, on_complete: str | None = None) -> Batch:
        """Send many tasks in one round trip per Redis server; ``on_complete`` (a task type) is dispatched
        with a :class:`~meetingtasks.callbacks.BatchOutcome` once every member has finished, whatever the
        outcome. Items are ``(type, payload)`` pairs or dicts with ``type``, ``payload`` and optionally
        ``priority``, ``delay``, ``eta``, ``timeout``, ``on_success``, ``on_failure``."""
        batch_id = new_id()
        complete: list[str] = []  # the callback's name and queue, for the batch record
        if on_complete is not None:
            fields = callback_fields(on_complete, None)
            complete = ["on_complete", fields["on_success"], "on_complete_queue", fields["on_success_queue"]]
        complete_type = complete[1] if complete else None
        prepared = [self.prepare(**_batch_item(item), task_id=task_id) for item, task_id in zip_ids(items)]
        by_url: dict[str, list[PreparedTask]] = {}
        for task in prepared:
            by_url.setdefault(self.platform.settings.broker_url(task.spec.service), []).append(task)
        if complete_type is not None and len(by_url) > 1:
            raise DispatchError(
                f"batch on_complete={complete_type}: its members live on {len(by_url)} Redis servers "
                "(service_redis_urls); a batch with on_complete must stay on one"
            )
        keys = self.platform.keys
        for tasks in by_url.values():
            client = self.platform.redis(tasks[0].spec.service)
            # The batch record goes first, so a member finishing at once is counted.
            record: list[str | int] = ["total", len(tasks), "done", 0, "created_at", repr(time.time())]
            if complete_type is not None:
                record += complete

            def build(pipe: Any, tasks: list[PreparedTask] = tasks, record: list[str | int] = record) -> None:
                pipe.hset(keys.batch(batch_id), items=record)
                pipe.expire(keys.batch(batch_id), self.platform.settings.status_ttl_s)
                self.enqueue_many(pipe, tasks, common={"batch": batch_id})

            self._send(client, build)
        if complete_type is not None and not prepared:
            # Nothing to wait for: complete at once.
            with self.platform.redis().pipeline(transaction=False) as pipe:
                pipe.hset(keys.batch(batch_id), items=["total", 0, "done", 0, *complete])
                pipe.expire(keys.batch(batch_id), self.platform.settings.status_ttl_s)
                pipe.zadd(keys.callbacks, {f"b:{batch_id}": time.time()})
                pipe.execute()
        return Batch(batch_id, [TaskHandle(t.task_id, self, t.spec.name) for t in prepared], self)

    def dispatch_each(self, requests: Sequence[Mapping[str, Any]]) -> list[TaskHandle | DispatchError]:
        """Queue independent tasks in one round trip per Redis server (the gateway's submits). Each request
        holds :meth:`prepare` keyword arguments; a refused one comes back as its error, the rest are queued."""
        outcomes: list[TaskHandle | DispatchError] = []
        by_url: dict[str, list[PreparedTask]] = {}
        for request in requests:
            try:
                task = self.prepare(**request)
            except DispatchError as exc:
                outcomes.append(exc)
                continue
            except ValueError as exc:  # e.g. an unknown priority
                outcomes.append(DispatchError(str(exc)))
                continue
            by_url.setdefault(self.platform.settings.broker_url(task.spec.service), []).append(task)
            outcomes.append(TaskHandle(task.task_id, self, task.spec.name))
        for tasks in by_url.values():

            def build(pipe: Any, tasks: list[PreparedTask] = tasks) -> None:
                for task in tasks:
                    self.enqueue(pipe, task)

            self._send(self.platform.redis(tasks[0].spec.service), build)
        return outcomes

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


def zip_ids(items: Iterable[Any]) -> Iterator[tuple[Any, str]]:
    """Each item with a fresh random (version 4) UUID; faster than ``uuid.uuid4()`` one by one."""
    materialised = list(items)
    noise = os.urandom(16 * len(materialised))
    for n, item in enumerate(materialised):
        raw = bytearray(noise[16 * n:16 * n + 16])
        raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
        h = raw.hex()
        yield item, f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_BATCH_OPTIONS = frozenset({"task_type", "payload", "priority", "delay", "eta", "timeout", "on_success",
                            "on_failure"})


def _batch_item(item: Any) -> dict[str, Any]:
    if isinstance(item, Mapping):
        out = dict(item)
        out["task_type"] = out.pop("type", out.get("task_type"))
        unknown = sorted(set(out) - _BATCH_OPTIONS)
        if unknown:
            raise InvalidPayload(
                f"batch item option(s) {', '.join(unknown)} not supported (use {', '.join(sorted(_BATCH_OPTIONS))}; "
                "dedup_key needs a round trip per task: use dispatch)"
            )
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

    def cancel(self, *, terminate: bool = False) -> Status:
        """Cancel the task (see :mod:`meetingtasks.cancel`); returns its status afterwards."""
        from meetingtasks.cancel import cancel_task

        return cancel_task(self.dispatcher.platform, self.id, terminate=terminate)


@dataclass
class Batch(Sequence[TaskHandle]):
    """The handles of one ``dispatch_batch``, in order, with the batch's own ``id``."""

    id: str
    handles: list[TaskHandle]
    dispatcher: Dispatcher | None = field(default=None, repr=False)

    def __getitem__(self, index: int) -> TaskHandle:  # type: ignore[override]
        return self.handles[index]

    def __len__(self) -> int:
        return len(self.handles)

    def status(self) -> dict[str, int]:
        """How many members are in each status (``UNKNOWN`` for expired records); one round trip per server."""
        if self.dispatcher is None:
            return _count_one_by_one(self.handles)
        counts: dict[str, int] = {}
        p = self.dispatcher.platform
        by_service: dict[str, list[TaskHandle]] = {}
        for handle in self.handles:
            spec = REGISTRY.find(handle.type or "")
            by_service.setdefault(spec.service if spec else "", []).append(handle)
        for service, handles in by_service.items():
            with p.redis(service or None).pipeline(transaction=False) as pipe:
                for handle in handles:
                    pipe.hget(p.keys.status(handle.id), "status")
                for raw in pipe.execute():
                    name = "UNKNOWN" if raw is None else (raw.decode() if isinstance(raw, bytes) else str(raw))
                    counts[name] = counts.get(name, 0) + 1
        return counts

    def done(self) -> bool:
        """True once every member has finished, whatever the outcome."""
        counts = self.status()
        return all(name in _TERMINAL_NAMES for name in counts)

    def wait(self, timeout: float | None = 60.0, poll_s: float = 0.05) -> dict[str, int]:
        """Block until every member has finished; returns the counts per status (never raises on failures)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            counts = self.status()
            if all(name in _TERMINAL_NAMES for name in counts):
                return counts
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"batch {self.id} not finished after {timeout}s ({counts})")
            time.sleep(poll_s)
            poll_s = min(poll_s * 1.5, 0.5)


_TERMINAL_NAMES = frozenset(s.value for s in Status if s.is_terminal)


def _count_one_by_one(handles: Sequence[TaskHandle]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for handle in handles:
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
    timeout: float | None = None,
    on_success: str | None = None,
    on_failure: str | None = None,
) -> TaskHandle:
    """Queue one task of ``task_type``; see :meth:`Dispatcher.dispatch`."""
    return default_dispatcher().dispatch(
        task_type, payload, priority=priority, delay=delay, eta=eta, dedup_key=dedup_key, timeout=timeout,
        on_success=on_success, on_failure=on_failure,
    )


def dispatch_batch(items: Iterable[Any], *, on_complete: str | None = None) -> Batch:
    """Queue many tasks in one round trip; see :meth:`Dispatcher.dispatch_batch`."""
    return default_dispatcher().dispatch_batch(items, on_complete=on_complete)


def _redacted(url: str) -> str:
    """``url`` without its password, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
