"""The dispatcher: the one path by which tasks enter the platform.

``dispatch`` validates the payload against the type's model and the size limit before anything is queued,
routes the type to its service's queue for the priority, records the status, and pushes the message
(or parks it in the delayed set) in one Redis round trip. ``dispatch_batch`` sends any number of tasks in
one round trip per Redis server.

Options recorded with the status (so whoever ends the task honours them, see :mod:`meetingtasks.status`):
``timeout`` (seconds from when the task is due; the watchdog marks it TIMED_OUT after that),
``on_success``/``on_failure`` (task types dispatched with the outcome, :mod:`meetingtasks.callbacks`), and
a batch's ``on_complete``. ``dedup_key``: a second dispatch with the same key within ``dedup_ttl_s`` returns
the first task's handle and queues nothing; the key is claimed in the same Lua call that queues the task, so
it never names a task that was not queued (see :mod:`meetingtasks.dedup`).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import hiredis
import orjson
import redis
from pydantic import BaseModel, TypeAdapter, ValidationError
from redis.exceptions import NoScriptError, ReadOnlyError
from redis.sentinel import MasterNotFoundError

from meetingtasks import moves, tracing
from meetingtasks.callbacks import callback_fields
from meetingtasks.connections import shared_client
from meetingtasks.dedup import claim_and_enqueue, once_script
from meetingtasks.errors import (
    BrokerUnavailable,
    ConfigurationError,
    DispatchError,
    InvalidPayload,
    MessageTooLarge,
    ReplicationTimeout,
    TaskFailed,
    TaskNotFound,
    WaitTimeout,
)
from meetingtasks.lua import Arg, LuaScript, execute_idempotent
from meetingtasks.message import MessageTemplate, encode_task_message, new_id, new_ids
from meetingtasks.moves import MoveOutcome
from meetingtasks.platform import Platform, get_platform
from meetingtasks.priority import Priority, queue_name
from meetingtasks.registry import REGISTRY, TaskTypeSpec
from meetingtasks.secret_fields import Keyring, keyring, open_result, require_keyring, seal_dumped
from meetingtasks.sentinel import is_sentinel
from meetingtasks.settings import Settings
from meetingtasks.signing import signer_for
from meetingtasks.status import _TRANSITION as TRANSITION_SCRIPT
from meetingtasks.status import Status, StatusRecord
from meetingtasks.status_schema import TERMINAL_NAMES, history_line
from meetingtasks.wake import push_wake

#: Tasks per batch script call: bounds how long one call holds Redis (about 3 ms) and the ``unpack`` of a chunk's
#: messages into one LPUSH (Lua's C stack takes 8,000 values).
BATCH_CHUNK = 500

#: The enqueue path: the first transition (QUEUED) of new tasks and their pushes, in one call (lua/enqueue_many.lua).
_ENQUEUE_MANY = LuaScript.load("enqueue_many")
#: A dispatch with ``dedup_key``: the claim and :meth:`Dispatcher.enqueue`'s commands in one call.
_ENQUEUE_ONCE = once_script(TRANSITION_SCRIPT)
#: Strings the enqueue script may put into its event JSON as they are.
_SAFE = re.compile(r"^[A-Za-z0-9_.:-]+$")
#: The per-call headers of a message, after ``mt_priority`` (see :meth:`Dispatcher.prepare`).
_TIMESTAMPS = ("mt_dispatched_at", "mt_enqueued_at")
_T = TypeVar("_T")


@functools.lru_cache(maxsize=1024)
def _template(task_name: str, queue: str, priority: str) -> MessageTemplate:
    return MessageTemplate(task_name, queue, {"mt_priority": priority}, _TIMESTAMPS)


@functools.lru_cache(maxsize=256)
def _list_adapter(model: type[BaseModel]) -> TypeAdapter[list[BaseModel]]:
    return TypeAdapter(list[model])  # type: ignore[valid-type]


def validation_message(task_type: str, exc: ValidationError) -> str:
    """One line naming every failing field: ``user_register: payload.email: value is not a valid email``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"payload.{where}: {err['msg']}")
    return f"{task_type}: " + "; ".join(parts)


def _unencodable(task_type: str, exc: Exception) -> InvalidPayload:
    return InvalidPayload(f"{task_type}: the payload cannot be sent as JSON ({exc}); send integers beyond 64 bits "
                          "as strings")


def validate_payload(spec: TaskTypeSpec, payload: Any, settings: Settings | None = None) -> dict[str, Any]:
    """The payload as the JSON the handler will get (its secret fields sealed, see
    :mod:`meetingtasks.secret_fields`), or :class:`InvalidPayload` naming the field."""
    model = spec.payload_model
    if spec.secret_fields:
        return _validate_sealed(spec, payload, settings)
    if isinstance(payload, model):
        return payload.model_dump(mode="json")
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json")
    try:
        # model_validate(...).model_dump(mode="json") without the two wrappers' keyword handling.
        validated = model.__pydantic_validator__.validate_python(payload)
        return model.__pydantic_serializer__.to_python(validated, mode="json")  # type: ignore[no-any-return]
    except ValidationError as exc:
        raise InvalidPayload(validation_message(spec.name, exc)) from None


def _validate_sealed(spec: TaskTypeSpec, payload: Any, settings: Settings | None) -> dict[str, Any]:
    """:func:`validate_payload` of a type with secret fields: the JSON dump shows a ``SecretStr`` as stars, so each
    secret is taken from the validated model and sealed (about 16 us per field, Fernet)."""
    model = spec.payload_model
    if isinstance(payload, BaseModel) and not isinstance(payload, model):
        payload = payload.model_dump(mode="json")  # (a SecretStr of another model would dump as stars)
    try:
        validated = payload if isinstance(payload, model) else model.__pydantic_validator__.validate_python(payload)
        body: dict[str, Any] = model.__pydantic_serializer__.to_python(validated, mode="json")
    except ValidationError as exc:
        raise InvalidPayload(validation_message(spec.name, exc)) from None
    return seal_dumped(spec.secret_fields, validated, body, _sealing_keyring(spec, settings))


def _sealing_keyring(spec: TaskTypeSpec, settings: Settings | None) -> Keyring:
    try:
        return require_keyring(settings or get_platform().settings, f"{spec.name} has secret fields")
    except ConfigurationError as exc:  # refused like any dispatch that cannot be accepted: nothing is queued
        raise DispatchError(str(exc)) from None


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
        body = validate_payload(spec, payload, settings)
        prio = Priority.parse(priority, settings.default_priority or spec.priority)
        queue = queue_name(spec.service, prio)
        due_s = self._due_time(delay, eta)
        task_id = task_id or new_ids(1)[0]
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
        trace = tracing.dispatch_headers(spec.name, task_id, queue)  # W3C trace context, when tracing
        signer = signer_for(settings)
        try:
            if trace or headers or signer is not None:
                hdrs = {"mt_priority": prio.value, "mt_dispatched_at": now, "mt_enqueued_at": due_s or now, **trace}
                if headers:
                    hdrs.update(headers)
                message = encode_task_message(task_id=task_id, task_name=spec.name, payload=body, queue=queue,
                                              headers=hdrs, signer=signer)
            else:  # the same bytes, from the pre-encoded template
                template = _template(spec.name, queue, prio.value)
                message = template.encode_many([task_id], [body], (now, due_s or now))[0]
        except orjson.JSONEncodeError as exc:
            raise _unencodable(spec.name, exc) from None
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
        common = dict(common or {})
        runs = _Runs()
        for task in tasks:
            if runs.fits(task):
                runs.add_prepared(task)
            else:
                self.enqueue(pipe, replace(task, fields={**common, **task.fields}))
        for args in self._script_args(runs, common):
            _ENQUEUE_MANY.queue(pipe, self._script_keys(), args, by_sha=by_sha)

    def _script_keys(self) -> list[str]:
        return [self.platform.keys.deadlines, self.platform.keys.wake("")]

    def _script_args(self, runs: _Runs, common: Mapping[str, str]) -> Iterator[list[Arg]]:
        """The ARGV of each call of the enqueue script for ``runs``, :data:`BATCH_CHUNK` tasks per call."""
        p = self.platform
        now = time.time()
        head: list[Arg] = [p.keys.status(""), repr(now), p.status.ttl_s, p.keys.status_channel,
                           history_line(Status.QUEUED, now, 1), 2 * len(common)]
        for name, value in common.items():
            head += [name, value]
        args = list(head)
        count = 0
        for run in runs.runs:
            start = 0
            while start < len(run.ids):
                take = min(len(run.ids) - start, BATCH_CHUNK - count)
                ids = run.ids[start:start + take]
                messages = run.encoded(start, start + take)  # payloads are encoded chunk by chunk, as sent
                if run.extras is None:
                    args += [run.name, run.queue, take, "0"]
                    args += ids
                    args += messages
                else:
                    args += [run.name, run.queue, take, "1"]
                    for task_id, message, (deadline, fields) in zip(ids, messages, run.extras[start:start + take],
                                                                    strict=True):
                        args += [task_id, deadline, 2 * len(fields), message]
                        for name, value in fields.items():
                            args += [name, value]
                start += take
                count += take
                if count == BATCH_CHUNK:
                    yield args
                    args = list(head)
                    count = 0
        if count:
            yield args

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
            return self._dispatch_once(client, task, dedup_key)
        if _Runs.fits(task):
            runs = _Runs()
            runs.add_prepared(task)
            [args] = self._script_args(runs, {})
            command = ("EVALSHA", _ENQUEUE_MANY.sha, 2, *self._script_keys(), *args)
            self._retrying(lambda: self._call_script(client, command))
        else:
            self._send(client, lambda pipe: self.enqueue(pipe, task))
        return TaskHandle(task.task_id, self, task.spec.name)

    def _dispatch_once(self, client: redis.Redis, task: PreparedTask, dedup_key: str) -> TaskHandle:
        """Claim ``dedup_key`` and queue ``task`` in one script call (:mod:`meetingtasks.dedup`), or return the
        handle of the task that holds the key. The call is safe to send again, so a connection lost mid-call
        is retried like a refused one."""
        with client.pipeline(transaction=False) as pipe:
            self.enqueue(pipe, task)
            commands = [command for command, _options in pipe.command_stack]
        p = self.platform
        owner, _queued = self._retrying(
            lambda: claim_and_enqueue(_ENQUEUE_ONCE, client, p.keys.dedup(dedup_key), task.task_id,
                                      p.settings.dedup_ttl_s, p.keys.status(""), commands,
                                      acks=p.replica_acks),
            resend=True,
        )
        return TaskHandle(owner, self, task.spec.name)

    def _send(self, client: Any, build: Callable[[Any], object]) -> list[Any]:
        """Execute one pipeline built by ``build``, as :meth:`_retrying` says (and confirmed by replicas when
        ``min_replica_acks`` asks)."""
        acks = self.platform.replica_acks
        replicated = (acks, lambda acked: acks.require(acked, "dispatch")) if acks else None
        return self._retrying(lambda: execute_idempotent(client, build, replicated))

    def _retrying(self, call: Callable[[], _T], *, resend: bool = False) -> _T:
        """Run ``call`` (one request to Redis); while Redis refuses connections, keep trying for
        ``dispatch_retry_s`` (nothing was sent, so nothing can be queued twice), then raise
        :class:`BrokerUnavailable`. A connection lost mid-request is not retried, the task may be queued,
        unless ``resend`` says that running ``call`` twice queues nothing twice."""
        deadline = time.monotonic() + self.platform.settings.dispatch_retry_s
        pause = 0.05
        sent = False  # whether a call may have reached Redis
        while True:
            try:
                return call()
            except (redis.ConnectionError, redis.TimeoutError, ReadOnlyError) as exc:
                where = _redacted(self.platform.settings.broker_url())
                if isinstance(exc, ReadOnlyError) and not is_sentinel(where):
                    raise  # a replica where a primary was configured: nothing will change it by itself
                # Not sent: no connection (no primary named by the sentinels yet, or refused), or a demoted primary's
                # refusal (its connection now asks the sentinels again).
                if not isinstance(exc, NOT_SENT) and "connecting to" not in str(exc):
                    sent = True
                    if not resend:
                        raise BrokerUnavailable(
                            f"lost the connection to Redis at {where} while queuing ({exc}); the task may or may "
                            "not be queued: check with `meetingtasks status ID`"
                        ) from None
                if time.monotonic() >= deadline:
                    outcome = ("the task may or may not be queued: dispatching again with the same dedup_key is safe"
                               if sent else "nothing was queued")
                    raise BrokerUnavailable(
                        f"cannot reach Redis at {where} ({exc}); {outcome} "
                        f"(tried for dispatch_retry_s={self.platform.settings.dispatch_retry_s}s)"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def _call_script(self, client: redis.Redis, command: tuple[Arg, ...]) -> None:
        """Run one ``EVALSHA`` of the enqueue script on a connection of ``client``'s pool, without the layers of
        ``execute_command`` (a few microseconds of a single dispatch); after a ``NOSCRIPT`` nothing ran, so the
        same call goes again as ``EVAL``."""
        pool = client.connection_pool
        conn: Any = pool.get_connection()  # redis-py's Connection methods are untyped
        try:
            # hiredis packs one message fast (unlike a chunk of them, see _pack); its stub types a 1-tuple
            conn.send_packed_command([hiredis.pack_command(command)])  # type: ignore[arg-type]
            self.platform.reply_wait.before_read(conn)
            try:
                conn.read_response()
            except NoScriptError:
                again = ("EVAL", _ENQUEUE_MANY.source, *command[2:])
                conn.send_packed_command([hiredis.pack_command(again)])  # type: ignore[arg-type]
                conn.read_response()
            acks = self.platform.replica_acks
            if acks:
                acks.confirm(conn, "dispatch")
        except (redis.ResponseError, ReplicationTimeout):
            raise  # a whole reply was read: the connection is fine
        except BaseException:
            conn.disconnect()  # a reply may be left unread: the connection cannot be reused
            raise
        finally:
            pool.release(conn)

    def _stream(self, client: redis.Redis, first: Sequence[Sequence[Arg]], calls: Iterable[list[Arg]]) -> None:
        """Send the ``first`` commands and an enqueue script call for each ARGV of ``calls`` on one connection,
        each call as soon as it is built, and read the replies at the end: the client builds (and encodes) the
        next call while Redis runs the previous one. EVAL, not EVALSHA: a script call cannot meet an empty
        script cache, and its source is small next to a chunk of messages. Raises the first error reply once
        every reply is read (the calls before and after it ran)."""
        pool = client.connection_pool
        conn: Any = pool.get_connection()  # redis-py's Connection methods are untyped
        try:
            commands: list[Sequence[Arg]] = list(first)
            keys = self._script_keys()
            sent = 0
            for args in calls:
                commands.append(("EVAL", _ENQUEUE_MANY.source, len(keys), *keys, *args))
                conn.send_packed_command([_pack(commands)])
                sent += len(commands)
                commands = []
            acks = self.platform.replica_acks
            if acks:
                commands.append(acks.command)
            if commands:
                conn.send_packed_command([_pack(commands)])
                sent += len(commands)
            errors: list[redis.ResponseError] = []
            reply: Any = None
            for _ in range(sent):
                try:
                    reply = conn.read_response()
                except redis.ResponseError as exc:
                    errors.append(exc)
            if acks and not errors:
                acks.require(reply, "dispatch_batch")
        except ReplicationTimeout:
            raise  # every reply was read
        except BaseException:
            conn.disconnect()  # replies may be left unread: the connection cannot be reused
            raise
        finally:
            pool.release(conn)
        if errors:
            raise errors[0]

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
        listed = list(items)
        ids = new_ids(len(listed))
        now = time.time()
        times = (now, now)  # mt_dispatched_at, mt_enqueued_at of the plain items
        try:
            planned = self._prepare_plain(listed, ids, times)
        except (DispatchError, ValueError):
            planned = None  # the one-by-one path below finds the first refused item and raises its error
        if planned is None:
            planned = [self.prepare(**_batch_item(item), task_id=task_id)
                       for item, task_id in zip(listed, ids, strict=True)]
        by_url: dict[str, tuple[_Runs, list[PreparedTask]]] = {}
        url_of: dict[str, str] = {}
        handles: list[TaskHandle] = []
        for entry, task_id in zip(planned, ids, strict=True):
            spec = entry.spec if isinstance(entry, PreparedTask) else entry[0]
            url = url_of.get(spec.service)
            if url is None:
                url = url_of[spec.service] = self.platform.settings.broker_url(spec.service)
            runs, single = by_url.get(url) or by_url.setdefault(url, (_Runs(), []))
            if not isinstance(entry, PreparedTask):
                runs.add(spec.name, entry[1], task_id, entry[2], template=entry[3], times=times)
            elif runs.fits(entry):
                runs.add_prepared(entry)
            else:
                single.append(entry)
            handles.append(TaskHandle(task_id, self, spec.name))
        if complete_type is not None and len(by_url) > 1:
            raise DispatchError(
                f"batch on_complete={complete_type}: its members live on {len(by_url)} Redis servers "
                "(service_redis_urls); a batch with on_complete must stay on one"
            )
        keys = self.platform.keys
        common = {"batch": batch_id}
        for url, (runs, single) in by_url.items():
            client = shared_client(url, self.platform.settings)
            # The batch record goes first, so a member finishing at once is counted.
            record: list[Arg] = ["total", runs.count + len(single), "done", 0, "created_at", repr(time.time())]
            if complete_type is not None:
                record += complete
            first: list[Sequence[Arg]] = [("HSET", keys.batch(batch_id), *record),
                                          ("EXPIRE", keys.batch(batch_id), self.platform.settings.status_ttl_s)]
            if single:
                with client.pipeline(transaction=False) as pipe:
                    for task in single:
                        self.enqueue(pipe, replace(task, fields={**common, **task.fields}))
                    first += [command for command, _options in pipe.command_stack]

            def send(client: redis.Redis = client, first: list[Sequence[Arg]] = first, runs: _Runs = runs) -> None:
                self._stream(client, first, self._script_args(runs, common))

            self._retrying(send)
        if complete_type is not None and not planned:
            # Nothing to wait for: complete at once.
            with self.platform.redis().pipeline(transaction=False) as pipe:
                pipe.hset(keys.batch(batch_id), items=["total", 0, "done", 0, *complete])
                pipe.expire(keys.batch(batch_id), self.platform.settings.status_ttl_s)
                pipe.zadd(keys.callbacks, {f"b:{batch_id}": time.time()})
                pipe.execute()
        return Batch(batch_id, handles, self)

    def _prepare_plain(self, items: Sequence[Any], ids: Sequence[str],
                       times: tuple[float, float]) -> list[PreparedTask | _Plain] | None:
        """Each item validated as :meth:`prepare` would: a plain ``(type, payload dict)`` item as ``(spec,
        queue, payload, template)``, with one pydantic call per task type for the whole batch, its message
        to be made from the template as it is sent; any other item by :meth:`prepare`. ``None`` when signing or
        tracing is on (each message is then made by :func:`encode_task_message`). Raises on the first refusal
        it meets, which need not be the first refused item: the caller finds that one item by item."""
        settings = self.platform.settings
        if signer_for(settings) is not None or tracing.active():
            return None
        planned: list[PreparedTask | _Plain | None] = []
        specs: dict[str, TaskTypeSpec] = {}
        plain: dict[str, list[int]] = {}  # type -> indexes of its plain items
        payloads: dict[str, list[dict[str, Any]]] = {}
        for n, (item, task_id) in enumerate(zip(items, ids, strict=True)):
            kind = type(item)
            if (kind is tuple or kind is list) and len(item) == 2:
                name, payload = item
            elif kind is dict and len(item) == 2 and "type" in item and "payload" in item:
                name, payload = item["type"], item["payload"]
            else:
                name = payload = None
            if type(name) is str and type(payload) is dict:
                if name not in specs:
                    specs[name] = REGISTRY.get(name)
                    plain[name] = []
                    payloads[name] = []
                plain[name].append(n)
                payloads[name].append(payload)
                planned.append(None)
            else:
                planned.append(self.prepare(**_batch_item(item), task_id=task_id))
        limit = settings.max_message_bytes
        for name, indexes in plain.items():
            spec = specs[name]
            adapter = _list_adapter(spec.payload_model)
            try:
                models = adapter.validate_python(payloads[name])
                bodies = adapter.dump_python(models, mode="json")
            except ValidationError as exc:
                raise InvalidPayload(validation_message(spec.name, exc)) from None
            if spec.secret_fields:  # sealed before the template splices them in: nothing below sees a plain secret
                ring = _sealing_keyring(spec, settings)
                bodies = [seal_dumped(spec.secret_fields, model, body, ring)
                          for model, body in zip(models, bodies, strict=True)]
            prio = Priority.parse(None, settings.default_priority or spec.priority)
            queue = queue_name(spec.service, prio)
            template = _template(spec.name, queue, prio.value)
            for n, body in zip(indexes, bodies, strict=True):
                try:
                    if template.max_length(len(orjson.dumps(body)), ids[n]) > limit:
                        [message] = template.encode_many([ids[n]], [body], times)
                        if len(message) > limit:
                            raise MessageTooLarge(f"{spec.name}: a message is over max_message_bytes")
                except orjson.JSONEncodeError as exc:
                    raise _unencodable(spec.name, exc) from None
                planned[n] = (spec, queue, body, template)
        return planned  # type: ignore[return-value]  # every None was filled in

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


def _pack(commands: Iterable[Sequence[Arg]]) -> bytes:
    """``commands`` in the Redis protocol, the bytes redis-py's packer writes: hiredis's packer is several times
    slower on a script call carrying a chunk of messages (it grows its buffer by copying)."""
    out: list[bytes] = []
    append = out.append
    for command in commands:
        append(b"*%d\r\n" % len(command))
        for arg in command:
            if type(arg) is bytes:
                data = arg
            elif type(arg) is str:
                data = arg.encode()
            elif type(arg) is int:
                data = b"%d" % arg
            elif type(arg) is float:
                data = repr(arg).encode()  # as redis-py writes a float
            else:
                raise TypeError(f"cannot send a {type(arg).__name__} to Redis: {arg!r}")
            append(b"$%d\r\n" % len(data))
            append(data)
            append(b"\r\n")
    return b"".join(out)


#: A plain batch item, validated: its type, queue, payload (as JSON-ready data) and message template.
_Plain = tuple[TaskTypeSpec, str, dict[str, Any], MessageTemplate]


@dataclass(slots=True)
class _Run:
    """Consecutive new tasks of one type and queue: one group of the enqueue script."""

    name: str
    queue: str
    ids: list[str]
    #: The messages, or (with ``template``) the payloads to encode them from when the run is sent.
    messages: list[Any]
    #: Per task: deadline (ms, or empty) and own status fields; ``None`` when no task of the run has either.
    extras: list[tuple[str, Mapping[str, str]]] | None
    template: MessageTemplate | None = None
    times: tuple[float, float] = (0.0, 0.0)

    def encoded(self, start: int, stop: int) -> list[bytes]:
        if self.template is None:
            return self.messages[start:stop]
        return self.template.encode_many(self.ids[start:stop], self.messages[start:stop], self.times)


class _Runs:
    """Tasks for the enqueue script, in order, as runs (see :data:`_ENQUEUE_MANY`)."""

    def __init__(self) -> None:
        self.runs: list[_Run] = []
        self.count = 0

    @staticmethod
    def fits(task: PreparedTask) -> bool:
        """Whether the script can queue ``task``: due now, with a type and id it can embed in its event."""
        return task.due_s is None and bool(_SAFE.match(task.spec.name) and _SAFE.match(task.task_id))

    def add(self, name: str, queue: str, task_id: str, message: Any,
            extra: tuple[str, Mapping[str, str]] | None = None, template: MessageTemplate | None = None,
            times: tuple[float, float] = (0.0, 0.0)) -> None:
        """Add a task: its ``message``, or with ``template`` its payload, encoded when sent."""
        last = self.runs[-1] if self.runs else None
        if (last is None or last.name != name or last.queue != queue or (last.extras is None) != (extra is None)
                or last.template is not template or last.times != times):
            last = _Run(name, queue, [], [], None if extra is None else [], template, times)
            self.runs.append(last)
        last.ids.append(task_id)
        last.messages.append(message)
        if extra is not None:
            last.extras.append(extra)  # type: ignore[union-attr]  # a run with extras has a list
        self.count += 1

    def add_prepared(self, task: PreparedTask) -> None:
        extra = None
        if task.fields or task.deadline_s is not None:
            extra = ("" if task.deadline_s is None else str(int(task.deadline_s * 1000)), task.fields)
        self.add(task.spec.name, task.queue, task.task_id, task.message, extra)


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
                    # The caller that reads the result is one of the two places a sealed secret is opened.
                    return open_result(rec.result, lambda: keyring(self.dispatcher.platform.settings))
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

    def set_priority(self, priority: Priority | str) -> MoveOutcome:
        """Move the waiting task to ``priority`` (see :mod:`meetingtasks.moves`); :class:`MoveRefused` once it
        started or finished, or while a worker holds it fetched."""
        return moves.set_priority(self.dispatcher.platform, self.id, priority)

    def promote(self) -> MoveOutcome:
        """Queue the scheduled task now, keeping its priority; :class:`MoveRefused` when it is not scheduled."""
        return moves.promote(self.dispatcher.platform, self.id)


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
        return all(name in TERMINAL_NAMES for name in counts)

    def wait(self, timeout: float | None = 60.0, poll_s: float = 0.05) -> dict[str, int]:
        """Block until every member has finished; returns the counts per status (never raises on failures)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            counts = self.status()
            if all(name in TERMINAL_NAMES for name in counts):
                return counts
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"batch {self.id} not finished after {timeout}s ({counts})")
            time.sleep(poll_s)
            poll_s = min(poll_s * 1.5, 0.5)




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


#: Errors of a request that never reached Redis, or that Redis refused whole: safe to send again.
NOT_SENT = (MasterNotFoundError, ReadOnlyError)


def _redacted(url: str) -> str:
    """``url`` without its password, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
