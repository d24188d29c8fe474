"""The dead-letter queue: the only module that writes dead letters.

One hash and one index per service (see :mod:`meetingtasks.store.keys`), on that service's own Redis (a service
may live on its own instance, ``service_redis_urls``). Methods taking one ``client`` read the services'
letters on that one server; those taking ``clients`` (service -> the client of its Redis, see
:meth:`meetingtasks.store.platform.Platform.service_clients`) visit each service on its own server, which is what
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

from meetingtasks.core.errors import ReplayRefused, TaskNotFound
from meetingtasks.core.message import dumps, loads, new_id, renew_envelope
from meetingtasks.core.priority import parse_queue
from meetingtasks.core.registry import known_services
from meetingtasks.core.secret_fields import mask
from meetingtasks.lua import LuaScript
from meetingtasks.store.keys import Keys
from meetingtasks.store.status_schema import Status, status_event

_HOST = socket.gethostname()

#: Puts a dead letter's message back on its queue and its record back to QUEUED (lua/replay_dead_letter.lua).
_REPLAY = LuaScript.load("replay_dead_letter")

#: One page of a service's letters, newest first, matching a filter (lua/dead_letter_page.lua).
_PAGE = LuaScript.load("dead_letter_page")
#: How many of a service's letters match a filter (lua/dead_letter_count.lua).
_COUNT = LuaScript.load("dead_letter_count")


@dataclass(frozen=True)
class LetterFilter:
    """Which letters a listing shows: by reason, task type and last failure time (epoch seconds, inclusive)."""

    reason: str | None = None
    task_type: str | None = None
    since_s: float | None = None
    until_s: float | None = None

    def score_range(self) -> tuple[str, str]:
        """(max, min) index scores in ms, as ZREVRANGEBYSCORE takes them."""
        high = "+inf" if self.until_s is None else str(int(self.until_s * 1000))
        low = "-inf" if self.since_s is None else str(int(self.since_s * 1000))
        return high, low

    def needles(self) -> list[str]:
        """The record's own JSON spelling of each field filtered on (records are written by :func:`dumps`)."""
        return [dumps({name: value}).decode()[1:-1] if value else ""
                for name, value in (("reason", self.reason), ("task_type", self.task_type))]

    def matches(self, letter: DeadLetter) -> bool:
        """The exact test; the Lua scan only finds candidates (a payload could spell the same text)."""
        return ((not self.reason or letter.reason == self.reason)
                and (not self.task_type or letter.task_type == self.task_type))


@dataclass(frozen=True)
class LetterPage:
    """One page of letters, newest first; ``next_cursor`` continues after its last one (``None``: no more)."""

    letters: list[DeadLetter]
    next_cursor: str | None
    #: Set when the page stopped reading before it was full: letters older than this (epoch s) are not searched.
    searched_to: float | None = None


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
        for svc in [service] if service else self.services_on(client):
            ids: list[Any] = list(client.zrevrange(self.keys.dlq_index(svc), 0, limit - 1))
            if not ids:
                continue
            for raw in client.hmget(self.keys.dlq(svc), ids):
                if raw is not None:
                    letters.append(DeadLetter(**loads(raw)))
        letters.sort(key=lambda letter: letter.last_failure_at, reverse=True)
        return letters[:limit]

    def get(self, client: redis.Redis, letter_id: str) -> DeadLetter:
        return self._find(client, letter_id, self.services_on(client))[1]

    def services_on(self, client: redis.Redis) -> tuple[str, ...]:
        """The registered services and those whose workers recorded themselves on ``client``'s Redis."""
        return known_services(client.smembers(self.keys.services))

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
        held_by, letter = self._find(client, letter_id, (service,) if service else self.services_on(client))
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

    # --- pages for the console (fast at any size: no full scan without a reason or type filter) ---------------
    def page(self, clients: Mapping[str, redis.Redis], service: str | None, flt: LetterFilter,
             cursor: str | None = None, limit: int = 50, read_at_most: int = 1_000_000_000) -> LetterPage:
        """Letters newest first matching ``flt``, after ``cursor`` (``"<score ms> <id>"`` from the previous page),
        ``service``'s or every service's (each read from its own Redis, then merged). Reads at most
        ``read_at_most`` letters per service: a rare match may then leave the page short, with ``searched_to``
        set and ``next_cursor`` continuing from there."""
        high, low = flt.score_range()
        cursor_id = ""
        if cursor:
            score, _, cursor_id = cursor.partition(" ")
            high = score if high == "+inf" or float(score) < float(high) else high
            if float(score) > float(high):
                cursor_id = ""
        rows: builtins.list[tuple[int, str, DeadLetter]] = []
        stops: builtins.list[tuple[int, str]] = []
        for svc in [service] if service else builtins.list(clients):
            stop, *flat = _PAGE(clients[svc], [self.keys.dlq(svc), self.keys.dlq_index(svc)],
                                [high, cursor_id, low, limit, read_at_most, *flt.needles()])
            if stop:
                score, _, letter_id = _text(stop).partition(" ")
                stops.append((int(float(score)), letter_id))
            for key, raw in zip(flat[::2], flat[1::2], strict=True):
                score, _, letter_id = _text(key).partition(" ")
                rows.append((int(float(score)), letter_id, _readable(svc, letter_id, raw)))
        rows.sort(key=lambda row: (row[0], row[1]), reverse=True)
        searched_to = max(stops) if stops else None
        if searched_to is not None:
            # Everything down to the newest stop was read on every service; nothing older may be shown yet.
            rows = [row for row in rows if (row[0], row[1]) >= searched_to]
        shown = rows[:limit]
        if len(shown) == limit:
            next_cursor: str | None = f"{shown[-1][0]} {shown[-1][1]}"
        elif searched_to is not None:
            next_cursor = f"{searched_to[0]} {searched_to[1]}"
        else:
            next_cursor = None
        return LetterPage([letter for *_, letter in shown if flt.matches(letter)], next_cursor,
                          searched_to[0] / 1000 if searched_to is not None and len(shown) < limit else None)

    def count_matching(self, clients: Mapping[str, redis.Redis], service: str | None, flt: LetterFilter,
                       read_at_most: int = 0) -> tuple[int, bool]:
        """``(letters matching flt, exact)``: a ZCOUNT without a reason or type; with one, a server-side scan of
        up to ``read_at_most`` letters per service (0: all), ``exact`` False when it stopped short."""
        high, low = flt.score_range()
        total, exact = 0, True
        for svc in [service] if service else builtins.list(clients):
            matching, _, complete = _COUNT(clients[svc], [self.keys.dlq(svc), self.keys.dlq_index(svc)],
                                           [high, low, read_at_most, *flt.needles()])
            total += int(matching)
            exact = exact and bool(complete)
        return total, exact

    def remove(self, client: redis.Redis, service: str, letter_ids: builtins.list[str]) -> int:
        """Delete the named letters of ``service``; returns how many were there."""
        if not letter_ids:
            return 0
        with client.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.dlq(service), *letter_ids)
            pipe.zrem(self.keys.dlq_index(service), *letter_ids)
            removed, _ = pipe.execute()
        return int(removed)

    def purge(self, client: redis.Redis, service: str | None = None) -> int:
        removed = 0
        for svc in [service] if service else self.services_on(client):
            with client.pipeline(transaction=True) as pipe:
                pipe.hlen(self.keys.dlq(svc))
                pipe.delete(self.keys.dlq(svc), self.keys.dlq_index(svc))
                count, _ = pipe.execute()
            removed += int(count)
        return removed


def _readable(service: str, letter_id: str, raw: bytes | str) -> DeadLetter:
    """The stored letter, or (a record this version cannot read) a stand-in saying so: one bad record must not
    hide the others from a listing."""
    try:
        return DeadLetter(**loads(raw))
    except (ValueError, TypeError) as exc:
        return DeadLetter(id=letter_id, service=service, reason="UnreadableRecord",
                          error=f"the stored dead letter cannot be read: {exc}", replayable=False)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def format_traceback(exc: BaseException) -> str:
    return "".join(tb.format_exception(type(exc), exc, exc.__traceback__))


def letter_id_for(task_id: str | None) -> str:
    """Dead letters of tasks are filed under the task id; anything without one gets a fresh id."""
    return task_id or new_id()
