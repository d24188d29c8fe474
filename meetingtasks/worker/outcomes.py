"""Task outcomes that ride on the worker's next fetch instead of costing a round trip each.

A task that runs in the consumer's own process (solo and threads pools) ends with two writes: its terminal
status (SUCCEEDED, FAILED, CANCELLED) and then Celery's ack. Both are buffered on the consuming channel and
applied, outcomes first, by the same Lua call that fetches the next messages (or at once when the channel
is idle), so a busy worker pays one round trip per batch of tasks instead of two per task. A task that a solo
worker fetched behind others in one batch records its STARTED the same way when it runs.

Nothing is lost by waiting: until the buffer is applied the message stays in the unacked set, so a worker that
dies first has its task redelivered, run again and recorded then (at-least-once, as with any acks-late
worker). A buffer that cannot be applied (Redis away) is kept and applied by the next call that gets through.

Prefork children write their outcomes themselves: the consuming channel lives in the parent. The process id
check below keeps a child forked after the channel registered (``--max-tasks-per-child``) from using it.
"""

from __future__ import annotations

import os
import threading
from typing import Protocol

from meetingtasks.status import Status, encode_transition

#: ``started`` of a message fetched behind others in a solo worker's batch (see the worker's FETCH script): the
#: task records its own STARTED, through this buffer, when it actually runs.
DEFERRED_START = -2


class OutcomeSink(Protocol):
    def buffer_outcome(self, entry: list[str]) -> None: ...

    def flush_acks(self) -> bool: ...


_lock = threading.Lock()
_sinks: dict[str, tuple[int, OutcomeSink]] = {}


def register_sink(service: str, sink: OutcomeSink) -> None:
    """Make ``sink`` (the consuming channel of ``service``'s worker) take this process's task outcomes."""
    with _lock:
        _sinks[service] = (os.getpid(), sink)


def unregister_sink(service: str, sink: OutcomeSink) -> None:
    with _lock:
        current = _sinks.get(service)
        if current is not None and current[1] is sink:
            del _sinks[service]


def sink_for(service: str) -> OutcomeSink | None:
    entry = _sinks.get(service)
    if entry is None or entry[0] != os.getpid():
        return None
    return entry[1]


def outcome_entry(task_id: str, status: Status, attempt: int, fields: dict[str, object], now: float) -> list[str]:
    """One outcome as the fetch script reads it: id, status, time, attempt, event JSON, n, n field/value strings."""
    event, flat = encode_transition(task_id, status, attempt, fields, now)
    return [task_id, status.value, repr(now), str(attempt), event.decode(), str(len(flat)), *flat]
