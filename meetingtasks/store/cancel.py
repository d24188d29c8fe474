"""Cancellation: a registry in Redis, so a worker that was down when the cancel came still obeys it.

What :func:`cancel` does depends on where the task is. The status record is read and changed in one
optimistic transaction (``WATCH``), so a worker that starts the task at that moment is noticed:

=========================  =========================================================================
status when cancelled      effect
=========================  =========================================================================
SCHEDULED or RETRYING      taken out of the delayed set, flag set, CANCELLED: it never runs.
QUEUED                     flag set, CANCELLED. The message stays on its queue; the worker that takes it
                           sees the flag and drops it unrun, without a dead letter (also a worker that
                           was down when the cancel was issued: the flag is in Redis, not in memory).
QUEUED, held by a worker   (its delivery count is above 0: a worker fetched it and has not started it yet,
                           e.g. behind others in a solo batch or in a prefork reserve) flag set; the
                           status stays QUEUED. The worker reads the flags of what it holds again before
                           it starts them (CANCEL_RECHECK_S) and drops it
                           unrun as CANCELLED; one that starts within those few milliseconds of the cancel
                           runs with its flag set, as a STARTED one does.
STARTED                    flag set and a Celery revoke broadcast. Without ``terminate`` the handler runs
                           on until it calls :func:`raise_if_cancelled` (then CANCELLED) or ends (its own
                           outcome stands); the status stays STARTED meanwhile. With ``terminate`` the
                           worker kills the process running it (prefork pool) and it becomes CANCELLED;
                           a threads or solo pool cannot kill a running handler, which the outcome says.
finished                   nothing changes; the outcome says so.
unknown id                 :class:`TaskNotFound`.
=========================  =========================================================================

Celery's own revoke is an in-memory broadcast; a worker that drops a revoked message tells us through the
``task_revoked`` signal (wired here, the one cancel-related signal), so the status never stays behind.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery, current_task
from celery.signals import task_revoked

from meetingtasks.core.errors import MeetingTasksError, TaskNotFound
from meetingtasks.core.message import loads
from meetingtasks.core.priority import parse_queue
from meetingtasks.lua import LuaScript
from meetingtasks.store.connections import celery_broker
from meetingtasks.store.platform import Platform, get_platform
from meetingtasks.store.status import Status, StatusRecord, parse_record

log = logging.getLogger(__name__)

#: Seconds a ``terminate`` waits for the workers' replies (a busy worker answers its control queue late).
REVOKE_REPLY_TIMEOUT_S = 1.5

#: A message fetched without starting (behind others in a solo batch, in a prefetched batch, in a prefork or threads
#: reserve, sent ahead to a busy prefork process) has its cancel flag read again before it starts if the last read
#: (the fetch's) is older than this: by the worker, one MGET for all such messages at most this often, and by a
#: prefork process for a job that waited in its pipe, so that a cancel issued while the worker held the message keeps
#: it from running. A cancel in the last few milliseconds before the start can miss it.
CANCEL_RECHECK_S = 0.005


class TaskCancelled(MeetingTasksError):
    """Raised by :func:`raise_if_cancelled` in a handler: the task ends CANCELLED, never retried or dead-lettered."""


@dataclass(frozen=True)
class CancelOutcome:
    """What a cancel found (``before``) and left (``status``)."""

    task_id: str
    before: Status
    status: Status
    terminate_refused: str | None = None
    held: bool = False  # QUEUED, but fetched by a worker that has not started it

    @property
    def ok(self) -> bool:
        """The task will not run (again): it is CANCELLED, or running (or about to start) with its cancel flag set."""
        return (self.status is Status.CANCELLED or self.held
                or (self.status is Status.STARTED and not self.terminate_refused))

    def describe(self) -> str:
        if self.before is Status.CANCELLED:
            return f"{self.task_id}: already CANCELLED"
        if self.before.is_terminal or (self.status.is_terminal and self.status is not Status.CANCELLED):
            return f"task {self.task_id} already finished ({self.status.value}); nothing to cancel"
        if self.status is Status.CANCELLED:
            return f"{self.task_id}: CANCELLED (was {self.before.value})"
        if self.held:
            return (f"{self.task_id}: cancel requested; a worker has fetched it and drops it before it starts "
                    "(CANCELLED then)")
        if self.terminate_refused:
            return (f"task {self.task_id} is running and could not be terminated ({self.terminate_refused}); "
                    "its cancel flag is set")
        return (f"{self.task_id}: cancel requested; it is running and stops at its next cancel check "
                "(--terminate kills it)")


def cancel(platform: Platform, task_id: str, *, terminate: bool = False) -> CancelOutcome:
    """Cancel ``task_id`` (see the module docstring). Unknown ids raise :class:`TaskNotFound`."""
    service = locate(platform, task_id)
    client = platform.redis(service)
    status_key = platform.keys.status(task_id)
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(status_key)  # type: ignore[no-untyped-call]
                raw = pipe.hgetall(status_key)
                record = parse_record(task_id, raw) if raw else None
                before = record.status if record is not None else Status.SCHEDULED
                if before.is_terminal:
                    pipe.reset()
                    return CancelOutcome(task_id, before, before)
                if before is Status.STARTED:
                    pipe.reset()
                    assert record is not None
                    return _cancel_running(platform, service, record, terminate)
                if record is not None and before is Status.QUEUED and int(record.fields.get("deliveries") or 0) > 0:
                    # A worker holds it unstarted: only it can tell whether it starts; it reads the flag first.
                    pipe.reset()
                    _set_flag(client, platform, task_id)
                    return CancelOutcome(task_id, before, _current(platform, client, task_id), held=True)
                pipe.multi()
                platform.delayed.queue_remove(pipe, service, task_id)
                platform.status.transition(
                    pipe, task_id, Status.CANCELLED, attempt=record.attempt if record else 1,
                    fields={**_identity(platform, client, service, task_id, record), "error": "cancelled"},
                )
                _set_flag(pipe, platform, task_id)  # after the transition: the record exists now
                pipe.execute()
                return CancelOutcome(task_id, before, Status.CANCELLED)
            except redis.WatchError:
                continue  # the status moved under us (pumped, started, finished): look again


def cancel_task(platform: Platform, task_id: str, *, terminate: bool = False) -> Status:
    """Cancel ``task_id``; returns its status afterwards. Unknown ids raise :class:`TaskNotFound`."""
    return cancel(platform, task_id, terminate=terminate).status


def locate(platform: Platform, task_id: str) -> str:
    """The service of ``task_id``, from its status record or, when that expired, the delayed sets."""
    for service, client in _clients(platform):
        found = client.hget(platform.keys.status(task_id), "service")
        if found is not None:
            return found.decode() if isinstance(found, bytes) else str(found)
        if client.exists(platform.keys.status(task_id)):
            return service  # a record without a service field (written by a foreign producer)
    for service in platform.services():
        if platform.redis(service).hexists(platform.keys.delayed_messages(service), task_id):
            return service
    raise TaskNotFound(f"no task with id {task_id!r} (unknown, or its status expired)")


def _clients(platform: Platform) -> list[tuple[str, redis.Redis]]:
    """One (service, client) per distinct Redis server."""
    seen: dict[str, tuple[str, redis.Redis]] = {}
    for service, url in platform.redis_urls().items():
        seen.setdefault(url, (service, platform.redis(service)))
    return list(seen.values())


#: The cancel flag and its copy in the status record (lua/set_cancel_flag.lua).
_SET_FLAG = LuaScript.load("set_cancel_flag")


def _set_flag(client: redis.Redis | redis.client.Pipeline, platform: Platform, task_id: str) -> None:
    keys = [platform.keys.cancel(task_id), platform.keys.status(task_id)]
    args: list[str | int] = [repr(time.time()), platform.settings.status_ttl_s]
    if isinstance(client, redis.client.Pipeline):
        _SET_FLAG.queue(client, keys, args)
    else:
        _SET_FLAG(client, keys, args)


def _identity(
    platform: Platform, client: redis.Redis, service: str, task_id: str, record: StatusRecord | None
) -> dict[str, Any]:
    """type/service/priority for the CANCELLED event: from the record, else from the waiting message."""
    if record is not None:
        return {name: record.fields.get(name) for name in ("type", "service", "priority")}
    identity: dict[str, Any] = {"service": service}
    entry = platform.delayed.entry(client, service, task_id)
    if entry is not None:
        queue, message = entry
        parsed = parse_queue(queue)
        identity["priority"] = parsed[1].value if parsed else None
        identity["type"] = (loads(message).get("headers") or {}).get("task")
    return identity


def _cancel_running(platform: Platform, service: str, record: StatusRecord, terminate: bool) -> CancelOutcome:
    client = platform.redis(service)
    _set_flag(client, platform, record.id)
    replies = _revoke(platform, service, record.id, terminate)
    if not terminate:
        return CancelOutcome(record.id, Status.STARTED, _current(platform, client, record.id))
    answers = [answer for reply in replies for answer in reply.values() if isinstance(answer, dict)]
    terminated = any(record.id in str(a.get("ok", "")) for a in answers)
    errors = [str(a["error"]) for a in answers if "error" in a]
    if errors and not terminated:
        log.info("terminate of %s refused by its worker: %s", record.id, errors[0])
        return CancelOutcome(record.id, Status.STARTED, _current(platform, client, record.id),
                             terminate_refused="its worker's pool cannot kill a running task; only prefork can")
    # Killed, or no worker holds it (its worker died): a redelivery meets the flag, so it is cancelled now.
    platform.status.transition(
        client, record.id, Status.CANCELLED, attempt=record.attempt,
        fields={**_identity(platform, client, service, record.id, record), "error": "cancelled: terminated"},
    )
    return CancelOutcome(record.id, Status.STARTED, _current(platform, client, record.id))


def _current(platform: Platform, client: redis.Redis, task_id: str) -> Status:
    record = platform.status.get(client, task_id)
    return record.status if record is not None else Status.CANCELLED


_control_apps: dict[str, Celery] = {}
_control_lock = threading.Lock()


def control_app(platform: Platform, service: str) -> Celery:
    """A bare Celery app on ``service``'s broker, only for remote control (revoke), one per URL."""
    url = platform.settings.broker_url(service)
    with _control_lock:
        app = _control_apps.get(url)
        if app is None:
            app = Celery("meetingtasks.control", set_as_current=False)
            app.conf.update(**celery_broker(url, platform.settings), broker_connection_retry_on_startup=False,
                            result_backend=None)
            _control_apps[url] = app
        return app


def _revoke(platform: Platform, service: str, task_id: str, terminate: bool) -> list[dict[str, Any]]:
    app = control_app(platform, service)
    if not terminate:
        return revoke(app, task_id)
    return revoke(app, task_id, terminate=True, reply_timeout_s=REVOKE_REPLY_TIMEOUT_S)


def revoke(app: Celery, task_id: str, *, terminate: bool = False,
           reply_timeout_s: float | None = None) -> list[dict[str, Any]]:
    """Celery's revoke broadcast for ``task_id`` through ``app`` (SIGTERM with ``terminate``); with
    ``reply_timeout_s``, the workers' replies. Every revoke the platform sends goes through here.

    After a failover, the connection ``app`` pooled still reaches the dead primary: kombu's publish retries on a
    new one by itself, but the read of the replies does not, and fails once with a ``ConnectionError``. So a lost
    connection sends the broadcast once more, on a new connection, which asks the sentinels where the primary is.
    Sending it twice is safe: a worker revokes an id once, and a terminate that finds its task already killed
    answers "tasks unknown". (The pooled connection, dropped by that failure, reconnects at its next use.)
    """
    options: dict[str, Any] = {"terminate": True, "signal": "SIGTERM"} if terminate else {}
    if reply_timeout_s is not None:
        options.update(reply=True, timeout=reply_timeout_s)
    with app.connection_for_write() as fresh:  # not connected unless the pooled one fails
        try:
            replies = app.control.revoke(task_id, **options)
        except fresh.connection_errors as exc:
            log.info("revoke of %s met a lost connection (%s: %s); sending it again on a new connection",
                     task_id, type(exc).__name__, exc)
            replies = app.control.revoke(task_id, connection=fresh, **options)
    return list(replies or [])


# --- inside a handler ------------------------------------------------------------------------------------
def is_cancelled(task_id: str | None = None) -> bool:
    """Whether a cancel was requested for ``task_id`` (default: the task this handler is running).

    One Redis ``EXISTS``; a long handler calls it between units of work (every second or so).
    """
    task = current_task._get_current_object() if task_id is None else None
    if task_id is None:
        if task is None or not getattr(task.request, "id", None):
            raise RuntimeError("is_cancelled() without a task id works only inside a running task")
        task_id = str(task.request.id)
    platform: Platform = getattr(task, "platform", None) or get_platform()
    spec = getattr(task, "spec", None)
    if spec is not None:
        return bool(platform.redis(spec.service).exists(platform.keys.cancel(task_id)))
    return any(client.exists(platform.keys.cancel(task_id)) for _, client in _clients(platform))


def raise_if_cancelled() -> None:
    """Raise :class:`TaskCancelled` when the running task has been cancelled; the platform records CANCELLED."""
    if is_cancelled():
        raise TaskCancelled("cancelled while running")


# --- worker side ------------------------------------------------------------------------------------------
@task_revoked.connect  # type: ignore[untyped-decorator]
def record_revoked_as_cancelled(sender: Any = None, request: Any = None, terminated: bool = False,
                                **_: Any) -> None:
    """A worker dropped (or killed) a revoked task of ours: record CANCELLED, or the status would stay behind."""
    spec = getattr(sender, "spec", None)
    platform: Platform | None = getattr(sender, "platform", None)
    task_id = getattr(request, "id", None)
    if spec is None or platform is None or not task_id:
        return
    info = getattr(request, "delivery_info", None) or {}
    parsed = parse_queue(str(info.get("routing_key") or ""))
    try:
        attempt = int(getattr(request, "retries", 0) or 0) + 1
        platform.status.transition(
            platform.redis(spec.service), task_id, Status.CANCELLED, attempt=attempt,
            fields={"type": spec.name, "service": spec.service, "priority": parsed[1].value if parsed else None,
                    "error": "cancelled: terminated" if terminated else "cancelled: revoked"},
        )
    except redis.RedisError as exc:
        log.warning("could not record the revoke of task %s as CANCELLED: %s", task_id, exc)
