"""The delayed set: tasks waiting for a due time (``delay``/``eta``, retry backoff).

Per service and priority, a sorted set of task ids scored by due time in epoch milliseconds, and per
service a hash of ``"<queue>\\n<message>"`` per id. The pump moves due entries onto their queues inside one
Lua call, so an entry is never lost and never moved twice, however many pumps race. A moved task whose status is still
SCHEDULED becomes QUEUED (published like any transition); a RETRYING task stays RETRYING until it starts.
No message ever waits inside a worker's memory, so a delay longer than the visibility timeout is safe.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import redis

from meetingtasks.core.priority import PRIORITY_ORDER, Priority, parse_queue
from meetingtasks.lua import LuaScript
from meetingtasks.store.keys import Keys

#: Moves due entries onto their queues and their records from SCHEDULED to QUEUED (lua/pump_delayed.lua).
_PUMP = LuaScript.load("pump_delayed")
#: Takes one entry out of the delayed set (lua/remove_delayed.lua).
_REMOVE = LuaScript.load("remove_delayed")


@dataclass(frozen=True)
class Waiting:
    """One entry of the delayed set: due at ``due_s`` (epoch s) onto ``queue``; ``None`` when its message is
    gone (moved or cancelled between the two reads)."""

    task_id: str
    due_s: float
    queue: str | None
    message: str | None


class DelayedSet:
    def __init__(self, keys: Keys, status_ttl_s: int) -> None:
        self.keys = keys
        self.status_ttl_s = status_ttl_s

    def schedule(
        self,
        client: redis.Redis | redis.client.Pipeline,
        service: str,
        task_id: str,
        queue: str,
        message: bytes,
        due_s: float,
    ) -> None:
        """Hold ``message`` until ``due_s`` (epoch seconds), then the pump pushes it onto ``queue``."""
        parsed = parse_queue(queue)
        if parsed is None or parsed[0] != service:
            raise ValueError(f"{queue!r} is not a queue of service {service!r}")
        entry = queue.encode() + b"\n" + message
        client.hset(self.keys.delayed_messages(service), task_id, entry)
        # Rounded up to the millisecond: the pump compares whole milliseconds and must never move it early.
        client.zadd(self.keys.delayed(service, parsed[1].value), {task_id: math.ceil(due_s * 1000)})
        # A delay may outlast status_ttl_s: keep the status record (and so cancel and status) alive until
        # status_ttl_s after the due time. Queued after the SCHEDULED transition by the dispatcher.
        client.expire(self.keys.status(task_id), max(0, int(due_s - time.time())) + self.status_ttl_s)

    def _keys(self, service: str) -> list[str]:
        return [self.keys.delayed_messages(service), *(self.keys.delayed(service, p.value) for p in PRIORITY_ORDER)]

    def pump(self, client: redis.Redis, service: str, *, limit: int = 1000, now_s: float | None = None) -> int:
        """Move up to ``limit`` due entries onto their queues; returns how many moved."""
        now_s = time.time() if now_s is None else now_s
        moved = _PUMP(
            client,
            self._keys(service),
            [int(now_s * 1000), limit, self.keys.status(""), self.keys.status_channel, repr(now_s),
             self.keys.wake(service), service, *(p.value for p in PRIORITY_ORDER)],
        )
        return int(moved)

    def pump_all(self, client: redis.Redis, service: str, *, batch: int = 1000) -> int:
        """Pump until nothing due is left."""
        total = 0
        while True:
            moved = self.pump(client, service, limit=batch)
            total += moved
            if moved < batch:
                return total

    def remove(self, client: redis.Redis, service: str, task_id: str) -> bool:
        """Take a waiting task out of the set; ``True`` if it was there."""
        return bool(_REMOVE(client, self._keys(service), [task_id]))

    def queue_remove(self, pipe: redis.client.Pipeline, service: str, task_id: str) -> None:
        """:meth:`remove` inside a pipeline or transaction; its reply (1 if it was there) lands in the results."""
        _REMOVE.queue(pipe, self._keys(service), [task_id])

    def entry(self, client: redis.Redis, service: str, task_id: str) -> tuple[str, bytes] | None:
        """``(queue, message)`` of a waiting task, or ``None`` when it is not waiting."""
        raw = client.hget(self.keys.delayed_messages(service), task_id)
        if raw is None:
            return None
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        queue, _, message = data.partition(b"\n")
        return queue.decode(), message

    def counts(self, client: redis.Redis, service: str) -> dict[Priority, int]:
        """Waiting entries per priority."""
        with client.pipeline(transaction=False) as pipe:
            for prio in PRIORITY_ORDER:
                pipe.zcard(self.keys.delayed(service, prio.value))
            return {prio: int(n) for prio, n in zip(PRIORITY_ORDER, pipe.execute(), strict=True)}

    def count(self, client: redis.Redis, service: str) -> int:
        return sum(self.counts(client, service).values())

    def page(self, client: redis.Redis, service: str, priority: Priority, offset: int = 0,
             limit: int = 50) -> list[Waiting]:
        """The waiting tasks ranked ``offset`` .. ``offset + limit`` by due time: a rank lookup in the sorted
        set, O(log N + limit) at any depth."""
        entries: list[Any] = list(client.zrange(self.keys.delayed(service, priority.value), offset,
                                                offset + limit - 1, withscores=True))
        if not entries:
            return []
        ids = [_text(e[0]) for e in entries]
        raws = client.hmget(self.keys.delayed_messages(service), ids)
        out = []
        for task_id, (_, score), raw in zip(ids, entries, raws, strict=True):
            queue, _, message = ("" if raw is None else _text(raw)).partition("\n")
            out.append(Waiting(task_id, float(score) / 1000, queue or None, message or None))
        return out

    def make_due(self, client: redis.Redis, service: str, task_id: str, now_s: float | None = None) -> bool:
        """Bring a waiting task's due time forward to now (the next pump moves it); ``False`` if not waiting."""
        now_ms = int((time.time() if now_s is None else now_s) * 1000)
        with client.pipeline(transaction=True) as pipe:
            for prio in PRIORITY_ORDER:
                pipe.zadd(self.keys.delayed(service, prio.value), {task_id: now_ms}, xx=True, ch=True)
            return any(int(n) for n in pipe.execute())

    def due_time_s(self, client: redis.Redis, service: str, task_id: str) -> float | None:
        with client.pipeline(transaction=False) as pipe:
            for prio in PRIORITY_ORDER:
                pipe.zscore(self.keys.delayed(service, prio.value), task_id)
            scores = [s for s in pipe.execute() if s is not None]
        return scores[0] / 1000 if scores else None


def _text(raw: bytes | str) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else raw
