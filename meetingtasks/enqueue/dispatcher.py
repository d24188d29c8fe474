"""The dispatcher: the one path by which tasks enter the platform.

``dispatch`` validates the payload against the type's model and the size limit before anything is queued,
routes the type to its service's queue for the priority, records the status, and pushes the message
(or parks it in the delayed set) in one Redis round trip. ``dispatch_batch`` sends any number of tasks in
one round trip per Redis server.

Options recorded with the status (so whoever ends the task honours them, see :mod:`meetingtasks.store.status`):
``timeout`` (seconds from when the task is due; the watchdog marks it TIMED_OUT after that),
``on_success``/``on_failure`` (task types dispatched with the outcome, :mod:`meetingtasks.store.callbacks`), and
a batch's ``on_complete``. ``dedup_key``: a second dispatch with the same key within ``dedup_ttl_s`` returns
the first task's handle and queues nothing; the key is claimed in the same Lua call that queues the task, so
it never names a task that was not queued (see :mod:`meetingtasks.store.dedup`).

The work is split by what it is about: :mod:`meetingtasks.enqueue.prepare` checks and encodes a task (no Redis),
:mod:`meetingtasks.enqueue.commands` says what is sent for it (the enqueue script, or the plain commands),
:mod:`meetingtasks.enqueue.sending` sends it (every public call below goes that one way), packed by the one
encoder of :mod:`meetingtasks.store.resp`. This module is the public face: :class:`Dispatcher`, :class:`TaskHandle`,
:class:`Batch` and the module-level ``dispatch`` and ``dispatch_batch``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis

from meetingtasks.core.errors import DispatchError, TaskFailed, TaskNotFound, WaitTimeout
from meetingtasks.core.message import new_id, new_ids
from meetingtasks.core.priority import Priority
from meetingtasks.core.registry import REGISTRY, TaskTypeSpec
from meetingtasks.core.secret_fields import keyring, open_result
from meetingtasks.enqueue import commands
from meetingtasks.enqueue.commands import BATCH_CHUNK, Runs
from meetingtasks.enqueue.prepare import (
    PreparedTask,
    batch_item,
    prepare_plain,
    validate_payload,
)
from meetingtasks.enqueue.prepare import prepare as prepare_task
from meetingtasks.enqueue.sending import NOT_SENT, Sender
from meetingtasks.lua import Arg
from meetingtasks.store import moves
from meetingtasks.store.callbacks import callback_fields
from meetingtasks.store.connections import shared_client
from meetingtasks.store.moves import MoveOutcome
from meetingtasks.store.platform import Platform, get_platform
from meetingtasks.store.resp import Command
from meetingtasks.store.status import Status, StatusRecord
from meetingtasks.store.status_schema import TERMINAL_NAMES

__all__ = ["BATCH_CHUNK", "NOT_SENT", "Batch", "Dispatcher", "PreparedTask", "TaskHandle", "default_dispatcher",
           "dispatch", "dispatch_batch", "validate_payload"]


class Dispatcher:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._sender = Sender(platform)

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
        return prepare_task(self.platform.settings, task_type, payload, priority=priority, delay=delay, eta=eta,
                            headers=headers, task_id=task_id, timeout=timeout, on_success=on_success,
                            on_failure=on_failure, fields=fields)

    def enqueue(self, pipe: Any, task: PreparedTask) -> None:
        """Queue the status write and the push of ``task`` on ``pipe`` (the plain commands, for a caller's own
        pipeline)."""
        commands.enqueue(self.platform, pipe, task)

    def enqueue_many(self, pipe: Any, tasks: Sequence[PreparedTask], common: Mapping[str, str] | None = None,
                     *, by_sha: bool = False) -> None:
        """Queue the status writes and pushes of new ``tasks`` on ``pipe`` (a caller's own pipeline, e.g. the
        bridge's transaction), in batch script calls of :data:`BATCH_CHUNK` tasks. ``common``: status fields every
        task gets (each task's own ``fields`` are written too). Delayed tasks, and names the script cannot embed
        as they are, go one by one."""
        commands.enqueue_many(self.platform, pipe, tasks, common, by_sha=by_sha)

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
            return TaskHandle(self._sender.once(client, task, dedup_key), self, task.spec.name)
        runs = Runs()
        if runs.fits(task):
            runs.add_prepared(task)
            self._sender.send(client, runs)
        else:
            self._sender.send(client, runs, [task])
        return TaskHandle(task.task_id, self, task.spec.name)

    def dispatch_batch(self, items: Iterable[Any], *, on_complete: str | None = None) -> Batch:
        """Send many tasks in one round trip per Redis server; ``on_complete`` (a task type) is dispatched
        with a :class:`~meetingtasks.store.callbacks.BatchOutcome` once every member has finished, whatever the
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
            planned = prepare_plain(self.platform.settings, listed, ids, times)
        except (DispatchError, ValueError):
            planned = None  # the one-by-one path below finds the first refused item and raises its error
        if planned is None:
            planned = [self.prepare(**batch_item(item), task_id=task_id)
                       for item, task_id in zip(listed, ids, strict=True)]
        by_url: dict[str, tuple[Runs, list[PreparedTask]]] = {}
        url_of: dict[str, str] = {}
        handles: list[TaskHandle] = []
        for entry, task_id in zip(planned, ids, strict=True):
            spec = entry.spec if isinstance(entry, PreparedTask) else entry[0]
            url = url_of.get(spec.service)
            if url is None:
                url = url_of[spec.service] = self.platform.settings.broker_url(spec.service)
            runs, single = by_url.get(url) or by_url.setdefault(url, (Runs(), []))
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
            first: list[Command] = [("HSET", keys.batch(batch_id), *record),
                                    ("EXPIRE", keys.batch(batch_id), self.platform.settings.status_ttl_s)]
            self._sender.send(client, runs, single, common=common, first=first, what="dispatch_batch")
        if complete_type is not None and not planned:
            # Nothing to wait for: complete at once.
            with self.platform.redis().pipeline(transaction=False) as pipe:
                pipe.hset(keys.batch(batch_id), items=["total", 0, "done", 0, *complete])
                pipe.expire(keys.batch(batch_id), self.platform.settings.status_ttl_s)
                pipe.zadd(keys.callbacks, {f"b:{batch_id}": time.time()})
                pipe.execute()
        return Batch(batch_id, handles, self)

    def dispatch_each(self, requests: Sequence[Mapping[str, Any]]) -> list[TaskHandle | DispatchError]:
        """Queue independent tasks in one round trip per Redis server (the gateway's submits). Each request
        holds :meth:`prepare` keyword arguments; a refused one comes back as its error, the rest are queued."""
        outcomes: list[TaskHandle | DispatchError] = []
        by_url: dict[str, tuple[redis.Redis, Runs, list[PreparedTask]]] = {}
        for request in requests:
            try:
                task = self.prepare(**request)
            except DispatchError as exc:
                outcomes.append(exc)
                continue
            except ValueError as exc:  # e.g. an unknown priority
                outcomes.append(DispatchError(str(exc)))
                continue
            url = self.platform.settings.broker_url(task.spec.service)
            if url not in by_url:
                by_url[url] = (self.platform.redis(task.spec.service), Runs(), [])
            _client, runs, single = by_url[url]
            if runs.fits(task):
                runs.add_prepared(task)
            else:
                single.append(task)
            outcomes.append(TaskHandle(task.task_id, self, task.spec.name))
        for client, runs, single in by_url.values():
            self._sender.send(client, runs, single)
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
        """Cancel the task (see :mod:`meetingtasks.store.cancel`); returns its status afterwards."""
        # Imported here: the cancel module imports Celery, which a process that only dispatches never needs.
        from meetingtasks.store.cancel import cancel_task

        return cancel_task(self.dispatcher.platform, self.id, terminate=terminate)

    def set_priority(self, priority: Priority | str) -> MoveOutcome:
        """Move the waiting task to ``priority`` (see :mod:`meetingtasks.store.moves`); :class:`MoveRefused` once it
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

