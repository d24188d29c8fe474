"""Task outcomes that ride on the worker's next fetch instead of costing a round trip each.

A task that runs in the consumer's own process (solo and threads pools) ends with two writes: its terminal
status (SUCCEEDED, FAILED, CANCELLED) and then Celery's ack. Both are buffered on the consuming channel and
applied, outcomes first, by the same Lua call that fetches the next messages (or at once when the channel
is idle), so a busy worker pays one round trip per batch of tasks instead of two per task. A task that a solo
worker fetched behind others in one batch records its STARTED the same way when it runs.

Nothing is lost by waiting: until the buffer is applied the message stays in the unacked set, so a worker that
dies first has its task redelivered, run again and recorded then (at-least-once, as with any acks-late
worker). A buffer that cannot be applied (Redis away) is kept and applied by the next call that gets through.

A prefork pool child has no consuming channel (it lives in the parent; the process id check below keeps a child
from using the parent's). Its outcomes go into a :class:`ChildOutcomes` buffer instead and travel back to the
parent with the task's result (:func:`meetingtasks.worker.request.run_and_collect`), where they join the
channel's buffer: a prefork worker, too, records a task's end with the ack and the next fetch, not with a round
trip of its own.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Protocol

from meetingtasks.store.status import Status, encode_transition

#: ``started`` of a message fetched behind others in a solo worker's batch (see the worker's FETCH script): the
#: task records its own STARTED, through this buffer, when it actually runs.
DEFERRED_START = -2


class OutcomeSink(Protocol):
    def buffer_outcome(self, entry: list[str]) -> None: ...

    def flush_acks(self) -> bool: ...


_lock = threading.Lock()
_sinks: dict[str, tuple[int, OutcomeSink]] = {}
#: This process's id, kept current across forks: read several times per task, and os.getpid() is a system call.
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def register_sink(service: str, sink: OutcomeSink) -> None:
    """Make ``sink`` (the consuming channel of ``service``'s worker) take this process's task outcomes."""
    with _lock:
        _sinks[service] = (_pid, sink)


def unregister_sink(service: str, sink: OutcomeSink) -> None:
    with _lock:
        current = _sinks.get(service)
        if current is not None and current[1] is sink:
            del _sinks[service]


def sink_for(service: str) -> OutcomeSink | None:
    entry = _sinks.get(service)
    if entry is None or entry[0] != _pid:
        return None
    return entry[1]


class ChildOutcomes:
    """The outcome sink of a prefork pool child (see the module docstring). ``write`` applies entries to Redis at
    once, for :meth:`flush_acks`: a status write of the task's that bypasses the buffer must not overtake them.

    A task handed over from the parent's reserve records its STARTED here when it runs, so that it travels with its
    outcome and the two are written as one; :meth:`flush_stale_start` (the child's start flusher thread) writes it
    sooner when the task runs on. One lock orders the two threads: the result never leaves with an outcome whose
    STARTED is still on its way to Redis."""

    def __init__(self, write: Callable[[list[list[str]]], None]) -> None:
        self._write = write
        self._entries: list[list[str]] = []
        self._lock = threading.RLock()
        self._start_buffered_at: float | None = None  # monotonic time of the oldest buffered STARTED

    def buffer_outcome(self, entry: list[str]) -> None:
        with self._lock:
            self._entries.append(entry)
            if entry[1] == "STARTED" and self._start_buffered_at is None:
                self._start_buffered_at = time.monotonic()

    def take(self) -> list[list[str]]:
        with self._lock:
            entries, self._entries = self._entries, []
            self._start_buffered_at = None
            return entries

    def flush_acks(self) -> bool:
        with self._lock:
            entries = self.take()
            if not entries:
                return True
            try:
                self._write(entries)
            except Exception:
                self._entries[:0] = entries  # kept: they go back with the result, or with the next flush
                if any(entry[1] == "STARTED" for entry in entries):
                    self._start_buffered_at = time.monotonic()
                return False
            return True

    def flush_stale_start(self, age_s: float) -> None:
        """Write the buffer now if a STARTED has waited in it longer than ``age_s`` (its task runs on)."""
        since = self._start_buffered_at
        if since is not None and time.monotonic() - since > age_s:
            self.flush_acks()


_child_sinks: dict[int, list[ChildOutcomes]] = {}


def register_child_sink(service: str, sink: ChildOutcomes) -> None:
    """Make ``sink`` take the task outcomes of ``service`` in this (pool child) process."""
    register_sink(service, sink)
    with _lock:
        _child_sinks.setdefault(_pid, []).append(sink)


def take_child_outcomes() -> list[list[str]]:
    """The outcomes this pool child buffered since the last call: those of the task that just ran."""
    sinks = _child_sinks.get(_pid)
    if not sinks:
        return []
    return [entry for sink in sinks for entry in sink.take()]


def outcome_entry(task_id: str, status: Status, attempt: int, fields: dict[str, object], now: float) -> list[str]:
    """One outcome as the fetch script reads it: id, status, time, attempt, event JSON, n, n field/value strings."""
    event, flat = encode_transition(task_id, status, attempt, fields, now)
    return [task_id, status.value, repr(now), str(attempt), event.decode(), str(len(flat)), *flat]
