"""The dead-letter queue: the only module that writes dead letters.

One hash and one index per service (see :mod:`meetingtasks.keys`), on that service's own Redis (a service
may live on its own instance, ``service_redis_urls``). Methods taking one ``client`` read the services'
letters on that one server; those taking ``clients`` (service -> the client of its Redis, see
:meth:`meetingtasks.platform.Platform.service_clients`) visit each service on its own server, which is what
tools (``dlq``, the console) must use.

A dead letter keeps the whole original message, so :meth:`DeadLetterStore.replay` can queue it again with
its original priority and a fresh retry budget. Replay is one Lua call that deletes the letter and pushes
the message together: two operators replaying the same letter at once queue it exactly once. It queues only
into the queues of the service whose dead-letter queue holds the letter: a letter naming another service's
queue (forged, or copied by hand between instances) is refused with :class:`ReplayRefused`.
"""

from __future__ import annotations

import builtins
import socket
import time
import traceback as tb
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from meetingtasks.errors import ReplayRefused, TaskNotFound
from meetingtasks.keys import Keys
from meetingtasks.lua import LuaScript
from meetingtasks.message import dumps, loads, new_id, renew_envelope
from meetingtasks.priority import parse_queue
from meetingtasks.registry import SERVICES
from meetingtasks.secret_fields import mask
from meetingtasks.status_schema import Status, status_event

_HOST = socket.gethostname()

#: Puts a dead letter's message back on its queue and its record back to QUEUED (lua/replay_dead_letter.lua).
_REPLAY = LuaScript.load("replay_dead_letter")


@dataclass
class DeadLetter:
    """One failed message and why it failed. Times are epoch seconds."""

    id: str
    service: str
    reason: str
    error: str
    task_id: str | None = None
    task_type: str | None = None
    priority: str | None = None
    queue: str | None = None
    payload: Any = None
    traceback: str | None = None
    attempts: int = 0
    first_failure_at: float = field(default_factory=time.time)
    last_failure_at: float = field(default_factory=time.time)
    worker: str = _HOST
    message: str | None = None  # the original queue item, verbatim (JSON text or repr of raw bytes)
    replayable: bool = True

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("message")
        out.pop("traceback")
        out["payload"] = mask(out["payload"])  # a display: sealed secrets show as ***
        return out


@dataclass(frozen=True)
class ReplayResult:
    id: str
    task_id: str | None
    queue: str
    replayed: bool


class DeadLetterStore:
    def __init__(self, keys: Keys, status_ttl_s: int) -> None:
        self.keys = keys
        self.status_ttl_s = status_ttl_s

    def add(self, client: redis.Redis | redis.client.Pipeline, letter: DeadLetter) -> None:
        """Store ``letter`` (replacing an older letter with the same id); queued if ``client`` is a pipeline."""
        record = dumps(asdict(letter))
        score = int(letter.last_failure_at * 1000)
        if isinstance(client, redis.client.Pipeline):
            client.hset(self.keys.dlq(letter.service), letter.id, record)
            client.zadd(self.keys.dlq_index(letter.service), {letter.id: score})
            return
        with client.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.dlq(letter.service), letter.id, record)
            pipe.zadd(self.keys.dlq_index(letter.service), {letter.id: score})
            pipe.execute()

    def list(self, client: redis.Redis, service: str | None = None, limit: int = 1000) -> list[DeadLetter]:
        """Letters newest first, for one service or all."""
        letters: list[DeadLetter] = []
        for svc in [service] if service else SERVICES:
            ids: list[Any] = list(client.zrevrange(self.keys.dlq_index(svc), 0, limit - 1))
            if not ids:
                continue
            for raw in client.hmget(self.keys.dlq(svc), ids):
                if raw is not None:
                    letters.append(DeadLetter(**loads(raw)))
        letters.sort(key=lambda letter: letter.last_failure_at, reverse=True)
        return letters[:limit]

    def get(self, client: redis.Redis, letter_id: str) -> DeadLetter:
        return self._find(client, letter_id, SERVICES)[1]

    def _find(self, client: redis.Redis, letter_id: str, services: tuple[str, ...]) -> tuple[str, DeadLetter]:
        """The service whose dead-letter queue on ``client`` holds ``letter_id``, and the letter."""
        for svc in services:
            raw = client.hget(self.keys.dlq(svc), letter_id)
            if raw is not None:
                return svc, DeadLetter(**loads(raw))
        raise TaskNotFound(f"no dead letter with id {letter_id!r} (see `meetingtasks dlq list`)")

    # --- every service on its own Redis ------------------------------------------------------------------------
    def list_each(self, clients: Mapping[str, redis.Redis], service: str | None = None,
                  limit: int = 1000) -> builtins.list[DeadLetter]:
        """Letters newest first, each service's read from its own Redis (``clients``: service -> client)."""
        letters: builtins.list[DeadLetter] = []
        for svc in [service] if service else builtins.list(clients):
            letters.extend(self.list(clients[svc], svc, limit=limit))
        letters.sort(key=lambda letter: letter.last_failure_at, reverse=True)
        return letters[:limit]

    def locate(self, clients: Mapping[str, redis.Redis], letter_id: str) -> tuple[str, DeadLetter]:
        """The service holding ``letter_id`` (looked up on each service's own Redis) and the letter."""
        for svc, client in clients.items():
            try:
                return self._find(client, letter_id, (svc,))
            except TaskNotFound:
                continue
        raise TaskNotFound(f"no dead letter with id {letter_id!r} (see `meetingtasks dlq list`)")

    def purge_each(self, clients: Mapping[str, redis.Redis], service: str | None = None) -> int:
        return sum(self.purge(clients[svc], svc) for svc in ([service] if service else builtins.list(clients)))

    def count(self, client: redis.Redis, service: str) -> int:
        return int(client.hlen(self.keys.dlq(service)))

    def replay(self, client: redis.Redis, letter_id: str, service: str | None = None) -> ReplayResult:
        """Queue the letter's message again (retries reset) on ``client``, the Redis of the service holding it
        (``service``; looked up among all on ``client`` when ``None``). Raises :class:`TaskNotFound` if it is
        gone, :class:`ReplayRefused` if it cannot be replayed as it is; nothing is queued then."""
        held_by, letter = self._find(client, letter_id, (service,) if service else SERVICES)
        if not letter.replayable or letter.message is None or letter.queue is None:
            raise ReplayRefused(
                f"dead letter {letter_id!r} cannot be replayed: {letter.reason} (remove it with `dlq purge`)"
            )
        target = parse_queue(letter.queue)
        if target is None:
            raise ReplayRefused(f"dead letter {letter_id!r} names no platform queue ({letter.queue!r}); not replayed")
        if target[0] != held_by:
            # The queue would be on this service's Redis, where no worker of the other service may listen, and
            # a letter must never route work to another service: only its own service's queues are targets.
            raise ReplayRefused(f"dead letter {letter_id!r} of service {held_by!r} names queue {letter.queue!r} of "
                                f"another service; not replayed (purge it, and dispatch the task again if wanted)")
        message = renew_envelope(loads(letter.message), retries=0)
        task_id = letter.task_id or letter.id
        now = time.time()
        event = dumps(status_event(task_id, Status.QUEUED, now, 1))
        done = _REPLAY(
            client,
            [self.keys.dlq(held_by), self.keys.dlq_index(held_by), letter.queue,
             self.keys.status(task_id), self.keys.wake(held_by)],
            [letter.id, message, repr(now), self.keys.status_channel, event, self.status_ttl_s],
        )
        return ReplayResult(id=letter.id, task_id=letter.task_id, queue=letter.queue, replayed=bool(done))

    def purge(self, client: redis.Redis, service: str | None = None) -> int:
        removed = 0
        for svc in [service] if service else SERVICES:
            with client.pipeline(transaction=True) as pipe:
                pipe.hlen(self.keys.dlq(svc))
                pipe.delete(self.keys.dlq(svc), self.keys.dlq_index(svc))
                count, _ = pipe.execute()
            removed += int(count)
        return removed


def format_traceback(exc: BaseException) -> str:
    return "".join(tb.format_exception(type(exc), exc, exc.__traceback__))


def letter_id_for(task_id: str | None) -> str:
    """Dead letters of tasks are filed under the task id; anything without one gets a fresh id."""
    return task_id or new_id()
