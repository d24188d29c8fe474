"""Callbacks: a task's ``on_success`` / ``on_failure`` and a batch's ``on_complete``, each fired exactly once.

A callback names a task type; it is dispatched with a :class:`TaskOutcome` (or :class:`BatchOutcome`)
payload, so a callback type declares ``payload=TaskOutcome``.

Why exactly once, whoever ends the task: the names are stored in the task's status record at dispatch
(fields ``on_success``/``on_failure``), and the first terminal transition (worker success or failure,
dead-lettering, the watchdog's TIMED_OUT, a cancel) files ``t:<task id>`` in the outbox ``P callbacks`` inside
the same Lua call that records the status (see :mod:`meetingtasks.store.status`); a batch's last member files
``b:<batch id>``. The :class:`CallbackPump` (run by the watchdog) claims an outbox entry atomically, dispatches
the callback with a de-duplication key derived from the entry (so a pump dying between dispatch and removal
cannot fire it twice), then removes the entry.

A callback whose dispatch is refused (an unknown type, a payload model that does not accept the outcome, a
message over the size limit) is dead-lettered with the reason. One whose dispatch meets a transient error
(:data:`TRANSIENT`: Redis unreachable, a lost connection or timeout, a write refused with OOM, READONLY, BUSY,
LOADING) stays in the outbox and is tried again after ``callback_retry_s``, doubling per failure up to
``callback_retry_max_s``; the failures are counted in ``P callback-retries`` until it settles. The dispatch's
dedup key is claimed in the same Lua call that queues the callback (:mod:`meetingtasks.store.dedup`), so a failed
attempt leaves nothing that would stop the next one, and a retry after a lost reply queues nothing twice.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

import redis
from pydantic import BaseModel, ConfigDict

from meetingtasks.core.backoff import backoff_ceiling_s
from meetingtasks.core.errors import BrokerUnavailable, DispatchError, UnknownTaskType
from meetingtasks.core.message import dumps
from meetingtasks.core.priority import parse_queue, queue_name
from meetingtasks.core.registry import REGISTRY, TaskTypeSpec
from meetingtasks.lua import LuaScript
from meetingtasks.store.deadletter import DeadLetter, letter_id_for
from meetingtasks.store.status import Status

if TYPE_CHECKING:
    from meetingtasks.store.platform import Platform

log = logging.getLogger(__name__)

TASK_ENTRY = "t:"
BATCH_ENTRY = "b:"

#: Errors after which a callback is tried again rather than dead-lettered: Redis could not take the dispatch
#: now (unreachable, connection lost, timeout, or a refused write: OOM, READONLY, BUSY, LOADING are all
#: ``RedisError``). ``BrokerUnavailable`` is a ``DispatchError`` but not a refusal of the callback.
TRANSIENT: tuple[type[Exception], ...] = (BrokerUnavailable, redis.RedisError, OSError)


class TaskOutcome(BaseModel):
    """The payload of an ``on_success`` / ``on_failure`` callback."""

    task_id: str
    task_type: str | None = None
    status: str
    attempt: int = 1
    result: Any = None
    error: str | None = None
    error_type: str | None = None


class BatchOutcome(BaseModel):
    """The payload of a batch's ``on_complete`` callback: how many members ended in each status."""

    batch_id: str
    total: int
    counts: dict[str, int]


def callback_fields(on_success: str | None, on_failure: str | None) -> dict[str, str]:
    """Status fields naming the callbacks and their queues; an unknown type fails here, before anything is
    queued. The queue is recorded so that a process that never loaded the callback's module can still
    queue it (its worker validates the payload, as for any task)."""
    fields: dict[str, str] = {}
    for name, value in (("on_success", on_success), ("on_failure", on_failure)):
        if value is not None:
            spec = REGISTRY.get(value)
            fields[name] = spec.name
            fields[f"{name}_queue"] = queue_name(spec.service, spec.priority)
    return fields


class _AnyPayload(BaseModel):
    """Stands in for the payload model of a callback type this process does not know."""

    model_config = ConfigDict(extra="allow")


def _unknown_handler(payload: Any) -> Any:
    raise RuntimeError("a stand-in spec is never run")


def stand_in_spec(task_type: str, queue: str) -> TaskTypeSpec | None:
    """A routing-only spec for a type known by name and queue (recorded at dispatch) but not loaded here."""
    parsed = parse_queue(queue)
    if parsed is None:
        return None
    return TaskTypeSpec(name=task_type, service=parsed[0], payload_model=_AnyPayload, handler=_unknown_handler,
                        priority=parsed[1])


class _Dispatched(Protocol):
    @property
    def id(self) -> str: ...


class CallbackDispatcher(Protocol):
    """What the pump fires callbacks through: the dispatcher (:class:`meetingtasks.enqueue.dispatcher.Dispatcher`),
    named here by its shape because the dispatch path is a layer above the store."""

    @property
    def platform(self) -> Platform: ...

    def dispatch(self, task_type: TaskTypeSpec, payload: Any, *, dedup_key: str | None = None) -> _Dispatched: ...


#: Claims a due outbox entry for one pump (lua/claim_callback.lua).
_CLAIM = LuaScript.load("claim_callback")


class CallbackPump:
    """Drains the callback outbox of one Redis server."""

    def __init__(self, dispatcher: CallbackDispatcher, client: redis.Redis) -> None:
        self.dispatcher = dispatcher
        self.platform = dispatcher.platform
        self.client = client

    def drain(self, limit: int = 500) -> int:
        """Fire every due callback (up to ``limit``); returns how many entries were settled."""
        keys = self.platform.keys
        now = time.time()
        entries = self.client.zrangebyscore(keys.callbacks, "-inf", now, start=0, num=limit)
        settled = 0
        for raw in entries:
            entry = raw.decode() if isinstance(raw, bytes) else str(raw)
            lease_until = now + self.platform.settings.callback_retry_s
            if not _CLAIM(self.client, [keys.callbacks], [entry, repr(now), repr(lease_until)]):
                continue
            try:
                self.fire(entry)
            except TRANSIENT as exc:
                self._retry_later(entry, exc)
                continue
            with self.client.pipeline(transaction=False) as pipe:
                pipe.zrem(keys.callbacks, entry)
                pipe.hdel(keys.callback_retries, entry)
                pipe.execute()
            settled += 1
        return settled

    def _retry_later(self, entry: str, exc: Exception) -> None:
        """Count the failure and make ``entry`` due again after the backoff. If Redis cannot take even that, the
        claim's lease (``callback_retry_s``) makes it due again anyway."""
        keys, settings = self.platform.keys, self.platform.settings
        try:
            retries = int(self.client.hincrby(keys.callback_retries, entry, 1))
            wait_s = backoff_ceiling_s(retries - 1, settings.callback_retry_s,
                                       max(settings.callback_retry_max_s, settings.callback_retry_s))
            self.client.zadd(keys.callbacks, {entry: time.time() + wait_s}, xx=True)
        except (redis.RedisError, OSError) as again:
            log.warning("callback %s not fired yet (%s); retrying in %.1fs (%s)", entry, exc,
                        settings.callback_retry_s, again)
            return
        log.warning("callback %s not fired yet (failure %d: %s); retrying in %.1fs", entry, retries, exc, wait_s)

    def fire(self, entry: str) -> None:
        if entry.startswith(TASK_ENTRY):
            self._fire_task(entry[len(TASK_ENTRY):])
        elif entry.startswith(BATCH_ENTRY):
            self._fire_batch(entry[len(BATCH_ENTRY):])
        else:
            log.error("callback outbox entry %r is not t:<id> or b:<id>; dropped", entry)

    def _fire_task(self, task_id: str) -> None:
        record = self.platform.status.get(self.client, task_id)
        if record is None:
            log.warning("callbacks of task %s dropped: its status record expired", task_id)
            return
        succeeded = record.status is Status.SUCCEEDED
        which = "on_success" if succeeded else "on_failure"
        callback = record.fields.get(which)
        if callback is None:
            return
        outcome = TaskOutcome(
            task_id=task_id, task_type=record.fields.get("type"), status=record.status.value,
            attempt=record.attempt, result=record.result if succeeded else None,
            error=None if succeeded else record.error, error_type=record.fields.get("error_type"),
        )
        self._dispatch(callback, record.fields.get(f"{which}_queue"), outcome, f"mt-callback:{task_id}",
                       about=f"task {task_id}")

    def _fire_batch(self, batch_id: str) -> None:
        raw = self.client.hgetall(self.platform.keys.batch(batch_id))
        fields = {_text(k): _text(v) for k, v in raw.items()}
        callback = fields.get("on_complete")
        if callback is None:
            log.warning("on_complete of batch %s dropped: its record expired", batch_id)
            return
        counts = {k[2:]: int(v) for k, v in fields.items() if k.startswith("n:")}
        outcome = BatchOutcome(batch_id=batch_id, total=int(fields.get("total", "0")), counts=counts)
        self._dispatch(callback, fields.get("on_complete_queue"), outcome, f"mt-batch-callback:{batch_id}",
                       about=f"batch {batch_id}")

    def _dispatch(self, callback: str, queue: str | None, outcome: BaseModel, dedup_key: str, *,
                  about: str) -> None:
        payload = outcome.model_dump(mode="json")
        spec = REGISTRY.find(callback) or (stand_in_spec(callback, queue) if queue else None)
        try:
            if spec is None:
                raise UnknownTaskType(f"unknown task type {callback!r} and no queue recorded for it")
            handle = self.dispatcher.dispatch(spec, payload, dedup_key=dedup_key)
        except BrokerUnavailable:
            raise  # transient: drain() tries again later
        except DispatchError as exc:
            self._refused(callback, payload, about, exc)
            return
        log.info("callback %s of %s dispatched as %s", callback, about, handle.id)

    def _refused(self, callback: str, payload: dict[str, Any], about: str, exc: DispatchError) -> None:
        spec = REGISTRY.find(callback)
        service = spec.service if spec is not None else "user"
        error = f"callback {callback} of {about} refused: {exc}"
        letter = DeadLetter(
            id=letter_id_for(None), service=service, reason="CallbackRefused", error=error, task_type=callback,
            payload=payload, attempts=0, message=dumps(payload).decode(), replayable=False,
        )
        self.platform.dead_letters.add(self.platform.redis(service), letter)
        log.error("%s (dead letter %s)", error, letter.id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
