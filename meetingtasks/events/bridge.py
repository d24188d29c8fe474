"""The bridge: turns events into tasks, durably and exactly once per (event, subscription).

Two threads, each with its own Redis connections:

- **streams**: reads every channel's stream with the consumer group ``Keys.bridge_group`` (bridges share
  the work; each event goes to one of them), runs the subscriptions of each event, queues the triggered
  tasks through the dispatcher and acknowledges the event only after that. Every
  ``bridge_claim_interval_s`` it re-claims (XAUTOCLAIM) events left unacknowledged for
  ``bridge_claim_idle_s``: those of a dead bridge and those whose subscription failed and is due again.
- **pub/sub**: listens on the channels for events outside services ``PUBLISH`` and appends each one the
  stream does not have yet (by event id; an id-less event gets one derived from its bytes), so it takes
  the same durable path. Our own events arrive there too and are recognised by their id.

Exactly once: every (event, subscription, index) has a deterministic task id. In one MULTI/EXEC guarded by
WATCH on those ids' status records, the bridge queues only the tasks whose status record does not exist
yet, so a redelivered event, or two bridges racing for one, never queue a task twice (within status_ttl_s).

Failures: a subscription that raises is retried when its event is re-claimed; after ``event_max_attempts``
failed runs, or at once when it returns a payload its task type refuses, the triggered task's id gets a
DEAD_LETTERED status and a dead letter under the subscribing service with the reason. A malformed stream
entry is dead-lettered under the channel's owner service. Lost connections and Redis restarts are
retried with capped backoff and one log line (see :mod:`meetingtasks.events.reconnect`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from meetingtasks import tracing
from meetingtasks.deadletter import DeadLetter, format_traceback
from meetingtasks.dispatcher import Dispatcher, PreparedTask
from meetingtasks.errors import DispatchError, InvalidEvent
from meetingtasks.events.channels import CHANNELS, OWNERS
from meetingtasks.events.envelope import Event, parse_event, parse_foreign
from meetingtasks.events.publisher import EventPublisher
from meetingtasks.events.reconnect import Reconnect, link_client
from meetingtasks.events.subscriptions import SUBSCRIPTIONS, Subscription, load_subscriptions
from meetingtasks.keys import EVENT_ATTEMPTS_TTL_S
from meetingtasks.lua import LuaScript
from meetingtasks.platform import Platform
from meetingtasks.registry import REGISTRY
from meetingtasks.status import Status

log = logging.getLogger(__name__)

#: Namespace of the ids of dead letters for malformed input (same input -> same letter).
MALFORMED_NAMESPACE = uuid.UUID("a3c1d7e2-5b8f-4f3a-9e61-7c2d4b9a0f55")
#: A consumer with nothing pending and idle this long belonged to a bridge that is gone; it is deleted.
STALE_CONSUMER_IDLE_S = 3600.0
_WATCH_RETRIES = 8
#: How long the pub/sub listener gathers messages before checking them in one round trip.
GATHER_S = 0.005

_EXISTS_EACH = LuaScript(
    """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('EXISTS', key) end
return out
"""
)


@dataclass
class BridgeStats:
    """Counters since start; read them from any thread (each is written by one thread)."""

    events: int = 0  # stream entries handled and acknowledged
    tasks: int = 0  # tasks queued
    duplicates: int = 0  # (event, subscription) pairs that had already triggered
    failures: int = 0  # subscription runs that raised (retried later)
    dead_letters: int = 0
    appended: int = 0  # events heard on pub/sub and appended to their stream


@dataclass
class Trigger:
    """What one subscription does for one event: queue ``tasks``, or file ``letter``."""

    event: Event
    sub: Subscription
    tasks: list[PreparedTask] = field(default_factory=list)
    letter: DeadLetter | None = None

    @property
    def marker(self) -> str:
        """The task id whose status record says this trigger already happened."""
        return self.tasks[0].task_id if self.tasks else self.sub.task_id(self.event.id)


@dataclass
class Entry:
    stream: str
    entry_id: str
    resolved: bool = True  # False while one of its subscriptions waits for another attempt


class _Clients:
    """One link client per Redis URL, dropped all together when a connection breaks."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._by_url: dict[str, redis.Redis] = {}

    def url(self, url: str) -> redis.Redis:
        client = self._by_url.get(url)
        if client is None:
            client = self._by_url[url] = link_client(url, self.platform.settings)
        return client

    def service(self, service: str | None) -> redis.Redis:
        return self.url(self.platform.settings.broker_url(service))

    def close(self) -> None:
        for client in self._by_url.values():
            client.close()
        self._by_url.clear()


class Bridge:
    """``start()`` runs the bridge on two daemon threads; ``stop()`` ends them (safe to call twice)."""

    def __init__(self, platform: Platform, *, includes: Iterable[str] = (), consumer: str | None = None) -> None:
        self.platform = platform
        self.settings = platform.settings
        self.keys = platform.keys
        self.group = self.keys.bridge_group
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.streams = {self.keys.event_stream(channel): channel for channel in CHANNELS}
        self.dispatcher = Dispatcher(platform)
        self.publisher = EventPublisher(platform)
        self.subscriptions = load_subscriptions([*self.settings.include, *includes])
        self.stats = BridgeStats()
        self.ready = threading.Event()
        self._streams_ready = threading.Event()
        self._listening = threading.Event()
        self._ready_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._links = [Reconnect("bridge streams", self.settings.reconnect_backoff_max_s),
                       Reconnect("bridge pub/sub", self.settings.reconnect_backoff_max_s)]

    # --- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> Bridge:
        if self._threads:
            return self
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._consume_forever, name="bridge-streams", daemon=True),
            threading.Thread(target=self._listen_forever, name="bridge-pubsub", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def _mark_ready(self) -> None:
        """Called by each thread once connected; the second one declares the bridge ready."""
        with self._ready_lock:
            if self._streams_ready.is_set() and self._listening.is_set() and not self.ready.is_set():
                self.ready.set()
                log.info("bridge ready: consumer %s, %d subscriptions on %d channels", self.consumer,
                         len(self.subscriptions), len(CHANNELS))

    def wait_ready(self, timeout_s: float = 10.0) -> bool:
        return self.ready.wait(timeout_s)

    @property
    def reconnects(self) -> int:
        return sum(link.reconnects for link in self._links)

    def stop(self) -> None:
        self._stop.set()
        threads, self._threads = self._threads, []
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=10)
        self.ready.clear()
        self._streams_ready.clear()
        self._listening.clear()

    # --- streams ------------------------------------------------------------------------------------------------
    def _consume_forever(self) -> None:
        link = self._links[0]
        carry: list[tuple[str, str, dict[bytes, bytes] | None]] = []  # read but not finished: retried first
        while not self._stop.is_set():
            clients = _Clients(self.platform)
            try:
                client = clients.url(self.settings.broker_url())
                self._ensure_groups(client)
                link.connected()
                self._streams_ready.set()
                self._mark_ready()
                next_claim = 0.0
                while not self._stop.is_set():
                    if carry:
                        self._handle(clients, carry)
                        carry = []
                    if time.monotonic() >= next_claim:
                        self._claim(clients, client)
                        next_claim = time.monotonic() + self.settings.bridge_claim_interval_s
                    carry = self._read(client)
            except (redis.RedisError, OSError) as exc:
                self._stop.wait(link.failed(exc))
            except Exception:  # a bug must not end the bridge; log it and go on after a pause
                log.exception("bridge streams: unexpected error; retrying")
                self._stop.wait(link.failed(RuntimeError("unexpected error")))
            finally:
                clients.close()

    def _ensure_groups(self, client: redis.Redis) -> None:
        # From "0": a bridge that starts for the first time also handles the events published before it.
        for stream in self.streams:
            try:
                client.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def _read(self, client: redis.Redis) -> list[tuple[str, str, dict[bytes, bytes] | None]]:
        reply: Any = client.xreadgroup(
            self.group, self.consumer, dict.fromkeys(self.streams, ">"),
            count=self.settings.bridge_batch, block=int(self.settings.bridge_block_s * 1000),
        )
        return [(_text(stream), _text(entry_id), fields)
                for stream, entries in (reply or []) for entry_id, fields in entries]

    def _claim(self, clients: _Clients, client: redis.Redis) -> None:
        """Take over events idle for ``bridge_claim_idle_s`` (a dead bridge's, or due for another attempt)."""
        min_idle_ms = int(self.settings.bridge_claim_idle_s * 1000)
        for stream in self.streams:
            cursor = "0-0"
            while not self._stop.is_set():
                next_cursor, claimed = client.xautoclaim(
                    stream, self.group, self.consumer, min_idle_ms, cursor, count=self.settings.bridge_batch
                )[:2]
                entries = [(stream, _text(eid), fields) for eid, fields in claimed if eid is not None]
                if len(entries) < len(claimed):
                    self._ack_deleted(client, stream, cursor, _text(next_cursor), {e[1] for e in entries})
                if entries:
                    log.info("bridge: claimed %d pending events of %s", len(entries), stream)
                    self._handle(clients, entries)
                cursor = _text(next_cursor)
                if cursor == "0-0":
                    break
        self._drop_stale_consumers(client)

    def _ack_deleted(self, client: redis.Redis, stream: str, start: str, end: str, present: set[str]) -> None:
        # Redis 6.2's XAUTOCLAIM returns nil for entries trimmed away before anyone handled them and keeps
        # them pending forever; find their ids and acknowledge them (Redis 7 does this by itself).
        upper = "+" if end == "0-0" else f"({end}"
        pending: Any = client.xpending_range(stream, self.group, min=start, max=upper, count=10_000,
                                        consumername=self.consumer)
        candidates = [_text(p["message_id"]) for p in pending if _text(p["message_id"]) not in present]
        if not candidates:
            return
        with client.pipeline(transaction=False) as pipe:
            for eid in candidates:
                pipe.xrange(stream, eid, eid)
            found = pipe.execute()
        gone = [eid for eid, rows in zip(candidates, found, strict=True) if not rows]
        if gone:
            client.xack(stream, self.group, *gone)
            log.warning("bridge: %d events of %s were trimmed from the stream before being handled",
                        len(gone), stream)

    def _drop_stale_consumers(self, client: redis.Redis) -> None:
        stale_ms = max(STALE_CONSUMER_IDLE_S, self.settings.bridge_claim_idle_s * 10) * 1000
        for stream in self.streams:
            for info in client.xinfo_consumers(stream, self.group):
                name = _text(info["name"])
                if info["pending"] == 0 and info["idle"] > stale_ms and name != self.consumer:
                    client.xgroup_delconsumer(stream, self.group, name)

    # --- handling a batch ---------------------------------------------------------------------------------------
    def _handle(self, clients: _Clients, rows: list[tuple[str, str, dict[bytes, bytes] | None]]) -> None:
        """Run the subscriptions of ``rows``, queue their tasks, acknowledge the rows that are done."""
        entries: list[Entry] = []
        triggers: list[Trigger] = []
        failed: list[tuple[Entry, Event, Subscription, BaseException]] = []
        for stream, entry_id, fields in rows:
            entry = Entry(stream, entry_id)
            entries.append(entry)
            raw = (fields or {}).get(b"event")
            try:
                event = parse_event(raw if raw is not None else b"null")
            except InvalidEvent as exc:
                self._file_malformed(clients, self.streams[stream], raw, str(exc), f"{stream} entry {entry_id}")
                continue
            for sub in SUBSCRIPTIONS.for_event(event.channel, event.type):
                try:
                    trigger = self._plan(event, sub)
                except DispatchError as exc:  # the payload can never be queued: no point in retrying
                    trigger = Trigger(event, sub, letter=self._letter(
                        event, sub, exc, attempts=1,
                        reason=f"subscription {sub.name} returned a payload that {sub.task_type} refuses"))
                except Exception as exc:
                    failed.append((entry, event, sub, exc))
                    continue
                if trigger.tasks or trigger.letter:
                    triggers.append(trigger)
        if failed:
            triggers += self._count_failures(clients, failed)
        self._commit(clients, triggers, [e for e in entries if e.resolved])

    def _plan(self, event: Event, sub: Subscription) -> Trigger:
        """Run ``sub`` for ``event`` and validate its payloads into tasks (the place a tracing span wraps)."""
        headers = {"mt_event_id": event.id, "mt_event_type": event.type, "mt_subscription": sub.name}
        fields = {"event_id": event.id, "event_type": event.type, "subscription": sub.name}
        with tracing.consume_event(event.type, event.trace, event_id=event.id, subscription=sub.name):
            tasks = [
                self.dispatcher.prepare(sub.task_type, payload, priority=sub.priority,
                                        task_id=sub.task_id(event.id, index), headers=headers, fields=fields)
                for index, payload in enumerate(sub.payloads(event))
            ]
        return Trigger(event, sub, tasks=tasks)

    def _count_failures(
        self, clients: _Clients, failed: list[tuple[Entry, Event, Subscription, BaseException]]
    ) -> list[Trigger]:
        """Count each failed run; return dead-letter triggers for those out of attempts."""
        client = clients.url(self.settings.broker_url())
        with client.pipeline(transaction=False) as pipe:
            for _, event, sub, _ in failed:
                pipe.hincrby(self.keys.event_attempts(event.id), sub.name, 1)
                pipe.expire(self.keys.event_attempts(event.id), EVENT_ATTEMPTS_TTL_S)
            counts = pipe.execute()[::2]
        letters = []
        for (entry, event, sub, exc), attempts in zip(failed, counts, strict=True):
            self.stats.failures += 1
            if attempts >= self.settings.event_max_attempts:
                letters.append(Trigger(event, sub, letter=self._letter(
                    event, sub, exc, attempts=int(attempts),
                    reason=f"subscription {sub.name} failed {attempts} times on {event.type} event {event.id}")))
            else:
                entry.resolved = False
                log.warning("bridge: subscription %s failed on %s event %s (attempt %d of %d, next in %.0fs): "
                            "%s: %s", sub.name, event.type, event.id, attempts, self.settings.event_max_attempts,
                            self.settings.bridge_claim_idle_s, type(exc).__name__, exc)
        return letters

    def _letter(self, event: Event, sub: Subscription, exc: BaseException, *, attempts: int,
                reason: str) -> DeadLetter:
        spec = REGISTRY.find(sub.task_type)
        priority = sub.priority or (spec.priority if spec else None)
        task_id = sub.task_id(event.id)
        return DeadLetter(
            id=task_id, service=sub.service, reason=reason, error=f"{type(exc).__name__}: {exc}",
            task_id=task_id, task_type=sub.task_type, priority=priority.value if priority else None,
            payload=event.model_dump(mode="json"), traceback=format_traceback(exc), attempts=attempts,
            message=event.to_json().decode(), replayable=False,
        )

    def _commit(self, clients: _Clients, triggers: list[Trigger], done: list[Entry]) -> None:
        """Queue ``triggers`` on their services' Redis, then acknowledge ``done``; on the streams' Redis
        (where everything is in the usual one-Redis set-up) the acknowledgement joins the same transaction."""
        stream_url = self.settings.broker_url()
        by_url: dict[str, list[Trigger]] = {}
        for trigger in triggers:
            service = trigger.tasks[0].spec.service if trigger.tasks else trigger.sub.service
            by_url.setdefault(self.settings.broker_url(service), []).append(trigger)
        for url, group in by_url.items():
            if url != stream_url:
                self._commit_once(clients.url(url), group, [])
        self._commit_once(clients.url(stream_url), by_url.get(stream_url, []), done)
        self.stats.events += len(done)

    def _commit_once(self, client: redis.Redis, triggers: list[Trigger], done: list[Entry]) -> None:
        """Queue the triggers whose marker has no status record yet and acknowledge ``done``, atomically
        (WATCH on the markers + MULTI/EXEC)."""
        markers = [self.keys.status(t.marker) for t in triggers]
        for _ in range(_WATCH_RETRIES):
            with client.pipeline(transaction=True) as pipe:
                try:
                    seen: list[bool] = []
                    if markers:
                        pipe.watch(*markers)  # type: ignore[no-untyped-call]
                        seen = [bool(flag) for flag in _EXISTS_EACH(pipe, markers)]
                        pipe.multi()
                    fresh = [t for t, exists in zip(triggers, seen, strict=True) if not exists]
                    tasks = [task for trigger in fresh for task in trigger.tasks]
                    if tasks:
                        self.dispatcher.enqueue_many(pipe, tasks)
                    for trigger in fresh:
                        if trigger.letter is not None:
                            self._queue_letter(pipe, trigger.letter)
                    for stream, ids in _by_stream(done).items():
                        pipe.xack(stream, self.group, *ids)
                    pipe.execute()
                except redis.WatchError:
                    continue  # someone wrote a marker meanwhile (a racing bridge): look again
            self.stats.tasks += len(tasks)
            self.stats.dead_letters += sum(1 for t in fresh if t.letter is not None)
            self.stats.duplicates += len(triggers) - len(fresh)
            for trigger in fresh:
                if trigger.letter is not None:
                    log.error("bridge: dead-lettered %s under %s: %s (%s)", trigger.letter.id,
                              trigger.letter.service, trigger.letter.reason, trigger.letter.error)
            return
        raise redis.RedisError(f"could not queue {len(triggers)} triggers: their markers kept changing")

    def _queue_letter(self, pipe: redis.client.Pipeline, letter: DeadLetter) -> None:
        self.platform.status.transition(
            pipe, letter.id, Status.DEAD_LETTERED, attempt=letter.attempts,
            fields={"type": letter.task_type, "service": letter.service, "priority": letter.priority,
                    "error": letter.error, "error_type": letter.error.split(":", 1)[0], "reason": letter.reason,
                    "created_at": repr(time.time())},
        )
        self.platform.dead_letters.add(pipe, letter)

    def _file_malformed(self, clients: _Clients, channel: str, raw: bytes | None, error: str, where: str) -> None:
        service = OWNERS[channel]
        text = raw.decode("utf-8", "replace") if raw is not None else None
        letter = DeadLetter(
            id=str(uuid.uuid5(MALFORMED_NAMESPACE, f"{channel}\n{text}")), service=service,
            reason=f"malformed event on {channel} ({where})", error=error, payload=text, message=text,
            replayable=False,
        )
        self.platform.dead_letters.add(clients.service(service), letter)
        self.stats.dead_letters += 1
        log.error("bridge: dead-lettered a malformed event on %s under %s: %s", channel, service, error)

    # --- pub/sub -----------------------------------------------------------------------------------------------
    def _listen_forever(self) -> None:
        link = self._links[1]
        channels = {self.keys.event_channel(c): c for c in CHANNELS}
        while not self._stop.is_set():
            clients = _Clients(self.platform)
            pubsub = None
            try:
                client = clients.url(self.settings.broker_url())
                pubsub = client.pubsub()  # type: ignore[no-untyped-call]
                pubsub.subscribe(*channels)
                confirmed = 0
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=self.settings.bridge_block_s)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        confirmed += 1
                        if confirmed == len(channels):
                            link.connected()
                            self._listening.set()
                            self._mark_ready()
                        continue
                    # Gather what arrives within a few ms, so that checking the ids costs one round trip for
                    # many messages rather than one each (outside events wait that much longer; ours are
                    # in their streams already).
                    batch = [message]
                    until = time.monotonic() + GATHER_S
                    while len(batch) < self.settings.bridge_batch:
                        more = pubsub.get_message(timeout=max(0.0, until - time.monotonic()))
                        if more is None:
                            break
                        batch.append(more)
                    self._append_heard(clients, channels, batch)
            except (redis.RedisError, OSError) as exc:
                self._stop.wait(link.failed(exc))
            except Exception:
                log.exception("bridge pub/sub: unexpected error; retrying")
                self._stop.wait(link.failed(RuntimeError("unexpected error")))
            finally:
                if pubsub is not None:
                    pubsub.close()
                clients.close()

    def _append_heard(self, clients: _Clients, channels: dict[str, str], batch: list[dict[str, Any]]) -> None:
        """Append each heard event whose id is not in its stream yet.

        Most of what is heard are our own events, already in their streams: one pipeline of EXISTS on
        their ids recognises them without validating them again; the rest are parsed and appended (the
        append script checks the id once more, atomically, against a racing bridge)."""
        heard: list[tuple[str, bytes, str | None]] = []
        for message in batch:
            channel = channels.get(_text(message["channel"])) if message.get("type") == "message" else None
            if channel is None:
                continue
            data = message["data"] if isinstance(message["data"], bytes) else str(message["data"]).encode()
            heard.append((channel, data, _claimed_id(data)))
        if not heard:
            return
        client = clients.url(self.settings.broker_url())
        with client.pipeline(transaction=False) as pipe:
            for _, _, event_id in heard:
                if event_id is not None:
                    pipe.exists(self.keys.event_id(event_id))
            known = iter(pipe.execute())
        events: list[Event] = []
        for channel, data, event_id in heard:
            if event_id is not None and next(known):
                continue
            try:
                event = parse_foreign(data, channel)
                self.publisher.encode(event)  # refuses an oversized event before we append anything
            except InvalidEvent as exc:
                self._file_malformed(clients, channel, data, str(exc), "published on pub/sub")
                continue
            events.append(event)
        if not events:
            return
        with client.pipeline(transaction=False) as pipe:
            for event in events:
                self.publisher.queue(pipe, event, announce=False)
            appended = pipe.execute()
        self.stats.appended += sum(1 for entry in appended if entry)


def _by_stream(entries: list[Entry]) -> dict[str, list[str]]:
    by_stream: dict[str, list[str]] = {}
    for entry in entries:
        by_stream.setdefault(entry.stream, []).append(entry.entry_id)
    return by_stream


def _claimed_id(data: bytes) -> str | None:
    """The ``id`` a pub/sub message says it has (unchecked), if it is JSON with a string id."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    event_id = obj.get("id") if isinstance(obj, dict) else None
    return event_id if isinstance(event_id, str) and event_id else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
