"""Moving a waiting task: to another priority (:func:`set_priority`) or to now (:func:`promote`).

Where the task waits decides how it moves; the status record is checked in the same Lua call as the move, so a
worker that takes the task meanwhile is noticed and nothing changes:

=========================  ==========================================================================================
status and place           ``set_priority``
=========================  ==========================================================================================
QUEUED (or RETRYING) in    one script: ``LREM`` from the old queue and ``LPUSH`` onto the new one (the back of that
its queue                  priority's line, like a new task), a wake token, and the transition: never in two queues,
                           never in none.
SCHEDULED or RETRYING in   one script: moved to the delayed zset of the new priority with the same due time; the
the delayed set            pump then pushes it onto the new priority's queue.
QUEUED, fetched by a       refused (:class:`MoveRefused`): a worker holds it (prefetched, in the unacked hash) and
worker, not started        runs it next; moving its lease would not stop that worker.
STARTED or finished        refused.
=========================  ==========================================================================================

The record's ``priority`` and ``queue`` show the new priority, ``previous_priority`` the old one, and its history
gains a line of the status the task is in (``"QUEUED <t> <attempt>"``: it re-entered its status at the new priority),
in the one history format of :mod:`meetingtasks.store.status`, published like every transition.

Cost: a queue is a Redis list, and only the message's bytes find it. The search reads the queue newest first
(where a task just queued behind a backlog sits), :data:`SCAN_SLICE` entries per script call, so Redis is never
held longer than one slice (about 2 ms); a task deeper than ``reprioritize_scan_max`` entries is refused. The
move's ``LREM`` starts from the end nearer to where the search found the message and stops there: at most half
the queue is compared in the one atomic call (about 6 ms for 100,000 entries). Figures: docs/tools.md, measured
by ``tests/test_moves.py::test_the_cost_of_finding_a_task_behind_a_hundred_thousand_others``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import redis

from meetingtasks.core.errors import MoveRefused, TaskNotFound
from meetingtasks.core.message import dumps, loads
from meetingtasks.core.priority import Priority, parse_queue, queue_name
from meetingtasks.lua import LuaScript
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status, StatusRecord, encode_transition

#: Queue entries one search call reads: bounds how long Redis is held per call (about 2-3 ms, see docs/tools.md).
SCAN_SLICE = 2_000
#: Times a move is tried again when the task changed place between the search and the move.
_ATTEMPTS = 3

#: Finds a task's message in a queue, newest first, a slice per call (lua/find_in_queue.lua).
_FIND = LuaScript.load("find_in_queue")
#: Whether a worker holds the task fetched and unstarted (lua/is_leased.lua).
_LEASED = LuaScript.load("is_leased")
#: Moves a queued message to another priority's queue with its transition (lua/move_queued.lua).
_MOVE_QUEUED = LuaScript.load("move_queued")
#: Moves a delayed entry to another priority's zset with its due time and transition (lua/move_delayed.lua).
_MOVE_DELAYED = LuaScript.load("move_delayed")


@dataclass(frozen=True)
class MoveOutcome:
    """What a move did: the task's ``status`` (unchanged by a move), its priority ``before`` and ``after``."""

    task_id: str
    status: Status
    before: Priority
    after: Priority
    moved: bool
    where: str  # "queue", "schedule", or "now" (promoted)

    def describe(self) -> str:
        if self.where == "now":
            return f"task {self.task_id} is due now: {self.status.value} on its {self.after.value} queue"
        if not self.moved:
            return f"task {self.task_id} is already {self.after.value}; nothing changed"
        place = "its queue" if self.where == "queue" else "the schedule (due time kept)"
        return (f"task {self.task_id} ({self.status.value}) moved from {self.before.value} to {self.after.value} "
                f"in {place}")


def _pairs(reply: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in zip(reply[::2], reply[1::2], strict=True):
        out[name.decode() if isinstance(name, bytes) else str(name)] = value
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def rewrite_message(message: bytes, queue: str, priority: Priority) -> bytes:
    """``message`` routed to ``queue``: its routing key (what the worker and kombu's restore read) and its
    ``mt_priority`` header. The body, and so a signature over it, is left byte for byte."""
    envelope = loads(message)
    envelope.setdefault("headers", {})["mt_priority"] = priority.value
    envelope.setdefault("properties", {}).setdefault("delivery_info", {})["routing_key"] = queue
    return dumps(envelope)


def _find_record(platform: Platform, task_id: str) -> tuple[redis.Redis, StatusRecord]:
    seen: set[int] = set()
    for svc in platform.redis_urls():
        client = platform.redis(svc)
        if id(client) in seen:
            continue
        seen.add(id(client))
        record = platform.status.get(client, task_id)
        if record is not None:
            return client, record
    raise TaskNotFound(f"no task with id {task_id!r} (unknown, or its status expired)")


def _identity(record: StatusRecord) -> tuple[str, Priority]:
    service = record.fields.get("service", "")
    parsed = parse_queue(record.fields.get("queue", ""))
    if not service and parsed is not None:
        service = parsed[0]
    if not service:
        raise MoveRefused(f"task {record.id} has no service in its status record; it cannot be moved")
    priority = Priority.parse(record.fields.get("priority") or (parsed[1].value if parsed else None),
                              Priority.NORMAL)
    return service, priority


def _refuse_status(record: StatusRecord, what: str) -> None:
    if record.status is Status.STARTED:
        raise MoveRefused(f"task {record.id} already STARTED; {what} only a waiting task")
    if record.status.is_terminal:
        raise MoveRefused(f"task {record.id} already finished ({record.status.value}); {what} only a waiting task")


def set_priority(platform: Platform, task_id: str, priority: Priority | str) -> MoveOutcome:
    """Move the waiting task ``task_id`` to ``priority`` (see the module docstring); raises :class:`MoveRefused`
    when it cannot move now (nothing changed), :class:`TaskNotFound` for an unknown id, ``ValueError`` for an
    unknown priority name."""
    new = Priority.parse(priority, Priority.NORMAL)
    for _ in range(_ATTEMPTS):
        client, record = _find_record(platform, task_id)
        _refuse_status(record, "reprioritize moves")
        service, old = _identity(record)
        if old is new:
            return MoveOutcome(task_id, record.status, old, new, False, "queue")
        entry = platform.delayed.entry(client, service, task_id)
        if entry is not None:
            outcome = _move_delayed(platform, client, record, service, old, new, entry)
        elif record.status is Status.SCHEDULED:
            continue  # the pump is moving it onto its queue right now: look again
        else:
            outcome = _move_queued(platform, client, record, service, old, new)
        if outcome is not None:
            return outcome
    raise MoveRefused(f"task {task_id} kept changing place (a worker or the pump is taking it); try again")


def _transition_args(platform: Platform, record: StatusRecord, service: str, old: Priority, new: Priority,
                     now: float) -> list[Any]:
    # No "type": an event with one counts as a newly published task for the exporter (meetingtasks.metrics.tasks).
    fields = {"service": service, "priority": new.value, "queue": queue_name(service, new),
              "previous_priority": old.value}
    event, flat = encode_transition(record.id, record.status, record.attempt, fields, now)
    keys = platform.keys
    return [record.status.value, repr(now), str(record.fields.get("attempt", "1")), platform.settings.status_ttl_s,
            keys.status_channel, event, record.id, keys.batch(""), *flat]


def _settle(record: StatusRecord, service: str, old: Priority, new: Priority, reply: list[Any],
            where: str) -> MoveOutcome | None:
    """The outcome of a move script, or ``None`` when the task changed place and the move is to be tried again."""
    result = _pairs(reply)
    if _text(result["outcome"]) == "moved":
        return MoveOutcome(record.id, record.status, old, new, True, where)
    return None


def _move_delayed(platform: Platform, client: redis.Redis, record: StatusRecord, service: str, old: Priority,
                  new: Priority, entry: tuple[str, bytes]) -> MoveOutcome | None:
    queue, message = entry
    old_entry = queue.encode() + b"\n" + message
    new_queue = queue_name(service, new)
    new_entry = new_queue.encode() + b"\n" + rewrite_message(message, new_queue, new)
    keys = platform.keys
    reply = _MOVE_DELAYED(
        client,
        [keys.status(record.id), keys.delayed_messages(service), keys.delayed(service, old.value),
         keys.delayed(service, new.value), keys.deadlines, keys.callbacks],
        [old_entry, new_entry, *_transition_args(platform, record, service, old, new, time.time())],
    )
    return _settle(record, service, old, new, reply, "schedule")


def _move_queued(platform: Platform, client: redis.Redis, record: StatusRecord, service: str, old: Priority,
                 new: Priority) -> MoveOutcome | None:
    old_queue = queue_name(service, old)
    found = _find_in_queue(platform, client, record.id, old_queue)
    if found is None:
        _refuse_missing(platform, client, record, service, old_queue)
        return None
    new_queue = queue_name(service, new)
    keys = platform.keys
    reply = _MOVE_QUEUED(
        client,
        [keys.status(record.id), old_queue, new_queue, keys.wake(service), keys.deadlines, keys.callbacks],
        [found[1], rewrite_message(found[1], new_queue, new), found[0],
         *_transition_args(platform, record, service, old, new, time.time())],
    )
    return _settle(record, service, old, new, reply, "queue")


def _find_in_queue(platform: Platform, client: redis.Redis, task_id: str, queue: str) -> tuple[int, bytes] | None:
    """``(index, message)`` of the task in ``queue``, read newest first in slices; ``MoveRefused`` past the scan
    bound."""
    limit = platform.settings.reprioritize_scan_max
    first = 0
    while first < limit:
        count = min(SCAN_SLICE, limit - first)
        found = _pairs(_FIND(client, [queue], [task_id, first, count]))
        if "message" in found:
            return int(found["index"]), found["message"]
        read = int(found["read"])
        if read < count:
            return None
        first += read
    depth = client.llen(queue)
    raise MoveRefused(
        f"task {task_id} is not among the newest {limit:,} entries of {queue} ({depth:,} queued); raise "
        "MEETINGTASKS_REPRIORITIZE_SCAN_MAX to search deeper"
    )


def _refuse_missing(platform: Platform, client: redis.Redis, record: StatusRecord, service: str, queue: str) -> None:
    """The task was not in its queue: tell why, or return to look again (it moved meanwhile)."""
    current = platform.status.get(client, record.id)
    if current is None or current.status != record.status or current.fields.get("queue") != record.fields.get("queue"):
        return  # it changed meanwhile: the caller looks again
    if _LEASED(client, [platform.keys.unacked(service)], [record.id]):
        raise MoveRefused(
            f"task {record.id} was already fetched by a worker (prefetched, not started yet); it runs next there "
            "and its priority cannot change now"
        )
    if record.status is Status.QUEUED:
        # Neither queued nor leased: a worker is between its fetch and the record (or the message was lost).
        raise MoveRefused(f"task {record.id} is QUEUED but not in {queue}: a worker is taking it; try again")


def promote(platform: Platform, task_id: str) -> MoveOutcome:
    """Make the scheduled (or retry-waiting) task ``task_id`` due now and push it onto its queue; raises
    :class:`MoveRefused` when it is not waiting in the schedule (nothing changed)."""
    client, record = _find_record(platform, task_id)
    _refuse_status(record, "promote queues")
    service, priority = _identity(record)
    if platform.delayed.entry(client, service, task_id) is None:
        raise MoveRefused(f"task {task_id} is {record.status.value}, not scheduled; promote queues only a scheduled "
                          "task")
    keys = platform.keys
    now_ms = math.floor(time.time() * 1000)
    with client.pipeline(transaction=True) as pipe:
        for p in Priority:
            # XX: only where it waits. A score of now makes it due for the pump below (and for the beat's pump).
            pipe.zadd(keys.delayed(service, p.value), {task_id: now_ms}, xx=True)
        pipe.execute()
    # The pump moves every due entry, critical first, up to a limit per call: run it until this one has moved.
    for _ in range(1_000):
        if platform.delayed.entry(client, service, task_id) is None:
            break
        if platform.delayed.pump(client, service, limit=1_000) == 0:
            break
    after = platform.status.get(client, task_id)
    return MoveOutcome(task_id, after.status if after else record.status, priority, priority, True, "now")
