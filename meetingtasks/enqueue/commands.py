"""What the enqueue sends: the commands that record new tasks and push them (or park the delayed ones).

Tasks due now go by the enqueue script (:data:`ENQUEUE_MANY`): runs of consecutive tasks of one type and queue,
:data:`BATCH_CHUNK` tasks per call, whose ARGV :func:`script_args` builds (a batch's plain items are encoded
from their type's template chunk by chunk, as they are sent). Delayed tasks, and names the script cannot
embed in its event as they are, go by :func:`enqueue`: the status transition script, the deadline, the push
or the delayed entry, queued on a redis-py pipeline (the plain path; the bridge's transaction queues through
:func:`enqueue_many` onto its own). How they are sent: :mod:`meetingtasks.enqueue.sending`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import redis

from meetingtasks.core.message import MessageTemplate
from meetingtasks.enqueue.prepare import PreparedTask
from meetingtasks.lua import Arg, LuaScript
from meetingtasks.store.dedup import claim_and_enqueue_script
from meetingtasks.store.platform import Platform
from meetingtasks.store.resp import Command
from meetingtasks.store.status import _TRANSITION as TRANSITION_SCRIPT
from meetingtasks.store.status import Status
from meetingtasks.store.status_schema import history_line
from meetingtasks.store.wake import push_wake

#: Tasks per batch script call: bounds how long one call holds Redis (about 3 ms) and the ``unpack`` of a chunk's
#: messages into one LPUSH (Lua's C stack takes 8,000 values).
BATCH_CHUNK = 500

#: The enqueue path: the first transition (QUEUED) of new tasks and their pushes, in one call (lua/enqueue_many.lua).
ENQUEUE_MANY = LuaScript.load("enqueue_many")
#: A dispatch with ``dedup_key``: the claim and :func:`enqueue`'s commands in one call.
ENQUEUE_ONCE = claim_and_enqueue_script(TRANSITION_SCRIPT)
#: Strings the enqueue script may put into its event JSON as they are.
SAFE = re.compile(r"^[A-Za-z0-9_.:-]+$")


@dataclass(slots=True)
class Run:
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


class Runs:
    """Tasks for the enqueue script, in order, as runs (see :data:`ENQUEUE_MANY`)."""

    def __init__(self) -> None:
        self.runs: list[Run] = []
        self.count = 0

    @staticmethod
    def fits(task: PreparedTask) -> bool:
        """Whether the script can queue ``task``: due now, with a type and id it can embed in its event."""
        return task.due_s is None and bool(SAFE.match(task.spec.name) and SAFE.match(task.task_id))

    def add(self, name: str, queue: str, task_id: str, message: Any,
            extra: tuple[str, Mapping[str, str]] | None = None, template: MessageTemplate | None = None,
            times: tuple[float, float] = (0.0, 0.0)) -> None:
        """Add a task: its ``message``, or with ``template`` its payload, encoded when sent."""
        last = self.runs[-1] if self.runs else None
        if (last is None or last.name != name or last.queue != queue or (last.extras is None) != (extra is None)
                or last.template is not template or last.times != times):
            last = Run(name, queue, [], [], None if extra is None else [], template, times)
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


def enqueue(platform: Platform, pipe: Any, task: PreparedTask) -> None:
    """Queue the status write and the push of ``task`` on ``pipe``."""
    p = platform
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
        push_wake(pipe, p.keys, task.spec.service)  # before the message: see meetingtasks.store.wake
        pipe.lpush(task.queue, task.message)
    else:
        p.delayed.schedule(pipe, task.spec.service, task.task_id, task.queue, task.message, task.due_s)


def enqueue_many(platform: Platform, pipe: Any, tasks: Sequence[PreparedTask],
                 common: Mapping[str, str] | None = None, *, by_sha: bool = False) -> None:
    """Queue the status writes and pushes of new ``tasks`` on ``pipe``, in batch script calls of
    :data:`BATCH_CHUNK` tasks. ``common``: status fields every task gets (each task's own ``fields`` are
    written too). Delayed tasks, and names the script cannot embed as they are, go one by one."""
    common = dict(common or {})
    runs = Runs()
    for task in tasks:
        if runs.fits(task):
            runs.add_prepared(task)
        else:
            enqueue(platform, pipe, replace(task, fields={**common, **task.fields}))
    for args in script_args(platform, runs, common):
        ENQUEUE_MANY.queue(pipe, script_keys(platform), args, by_sha=by_sha)


def script_keys(platform: Platform) -> list[str]:
    """The enqueue script's KEYS."""
    return [platform.keys.deadlines, platform.keys.wake("")]


def script_args(platform: Platform, runs: Runs, common: Mapping[str, str]) -> Iterator[list[Arg]]:
    """The ARGV of each call of the enqueue script for ``runs``, :data:`BATCH_CHUNK` tasks per call."""
    p = platform
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


def commands_of(client: redis.Redis, build: Callable[[Any], object]) -> list[Command]:
    """The commands ``build`` queues on a pipeline of ``client``, unsent (a pipeline only records them)."""
    with client.pipeline(transaction=False) as pipe:
        build(pipe)
        return [command for command, _options in pipe.command_stack]
