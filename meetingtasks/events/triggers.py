"""Turning stream entries into queued tasks, exactly once per (event, subscription, index).

:meth:`TriggerWriter.handle` takes a batch of entries read from the streams: it runs the subscriptions of
each event, validates their payloads into tasks (:meth:`Dispatcher.prepare`, under the deterministic ids of
:meth:`Subscription.task_id`) and commits them: in one MULTI/EXEC guarded by WATCH on those ids' status
records, it queues only the tasks whose status record does not exist yet (so a redelivered event, or two
bridges racing for one, never queue a task twice within ``status_ttl_s``) and acknowledges the entries
that are done, when the streams live on the same Redis as the queues.

A subscription that raises leaves its entry unacknowledged, to be re-claimed after
``bridge_claim_idle_s``; after ``event_max_attempts`` failed runs, or at once when its payload is refused
(:class:`DispatchError`), the would-be task's id gets a DEAD_LETTERED status and a dead letter under the
subscribing service, with the reason. A malformed entry is dead-lettered under the channel's owner.

A replay (:mod:`meetingtasks.events.replay`) takes the same path: :meth:`TriggerWriter.plan` under its
generation, then :meth:`TriggerWriter.replay`, which commits the same way and acknowledges nothing.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from meetingtasks.core import tracing
from meetingtasks.core.errors import DispatchError, InvalidEvent
from meetingtasks.core.registry import REGISTRY
from meetingtasks.enqueue.dispatcher import Dispatcher, PreparedTask
from meetingtasks.events.channels import CHANNELS, OWNERS
from meetingtasks.events.envelope import Event, parse_event
from meetingtasks.events.reconnect import LinkClients
from meetingtasks.events.subscriptions import SUBSCRIPTIONS, Subscription
from meetingtasks.lua import LuaScript
from meetingtasks.store.deadletter import DeadLetter, format_traceback
from meetingtasks.store.keys import EVENT_ATTEMPTS_TTL_S
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status

log = logging.getLogger(__name__)

#: Namespace of the ids of dead letters for malformed input (same input -> same letter).
MALFORMED_NAMESPACE = uuid.UUID("a3c1d7e2-5b8f-4f3a-9e61-7c2d4b9a0f55")
_WATCH_RETRIES = 8

#: Whether each key exists, one call inside a WATCH (lua/exists_each.lua).
_EXISTS_EACH = LuaScript.load("exists_each")

#: A stream entry as read: (stream key, entry id, fields or None when the entry is gone).
Row = tuple[str, str, "dict[bytes, bytes] | None"]


@dataclass
class BridgeStats:
    """Counters since start, readable from any thread."""

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
    generation: int = 0  # 0: the bridge's run; a replay's own otherwise

    @property
    def marker(self) -> str:
        """The task id whose status record says this trigger already happened."""
        return self.tasks[0].task_id if self.tasks else self.sub.task_id(self.event.id, generation=self.generation)


#: A subscription run that raised: its entry, the event, the subscription and the exception.
Failure = tuple["Entry", Event, Subscription, BaseException]


@dataclass
class Entry:
    stream: str
    entry_id: str
    resolved: bool = True  # False while one of its subscriptions waits for another attempt


class TriggerWriter:
    def __init__(self, platform: Platform, stats: BridgeStats) -> None:
        self.platform = platform
        self.settings = platform.settings
        self.keys = platform.keys
        self.group = self.keys.bridge_group
        self.stats = stats
        self._letters_lock = threading.Lock()  # dead letters are counted by the stream and the pub/sub thread
        self.dispatcher = Dispatcher(platform)
        self.channel_of = {self.keys.event_stream(channel): channel for channel in CHANNELS}

    def handle(self, clients: LinkClients, rows: list[Row]) -> None:
        """Run the subscriptions of ``rows``, queue their tasks, acknowledge the rows that are done."""
        entries, triggers, failed = self.plan(rows, on_malformed=lambda *bad: self.file_malformed(clients, *bad))
        if failed:
            triggers += self._count_failures(clients, failed)
        self._commit(clients, triggers, [e for e in entries if e.resolved])

    def replay(self, clients: LinkClients, triggers: list[Trigger]) -> list[Trigger]:
        """Queue planned replay ``triggers`` (a generation > 0) the same way, acknowledging nothing (the
        entries belong to the bridges' group); returns those queued now (the others had run already)."""
        return self._commit(clients, triggers, [])

    def plan(
        self, rows: list[Row], *, generation: int = 0, only: Callable[[Subscription], bool] | None = None,
        on_malformed: Callable[[str, bytes | None, str, str], None] | None = None,
    ) -> tuple[list[Entry], list[Trigger], list[Failure]]:
        """Run the subscriptions (those ``only`` accepts) of each row's event under ``generation``: the
        triggers to commit and the runs that raised. Nothing is written; a malformed entry goes to
        ``on_malformed(channel, raw, error, where)`` (or is skipped)."""
        entries: list[Entry] = []
        triggers: list[Trigger] = []
        failed: list[Failure] = []
        for stream, entry_id, fields in rows:
            entry = Entry(stream, entry_id)
            entries.append(entry)
            raw = (fields or {}).get(b"event")
            try:
                event = parse_event(raw if raw is not None else b"null")
            except InvalidEvent as exc:
                if on_malformed is not None:
                    on_malformed(self.channel_of[stream], raw, str(exc), f"{stream} entry {entry_id}")
                continue
            for sub in SUBSCRIPTIONS.for_event(event.channel, event.type):
                if only is not None and not only(sub):
                    continue
                try:
                    trigger = self._plan(event, sub, generation)
                except DispatchError as exc:  # the payload can never be queued: no point in retrying
                    trigger = Trigger(event, sub, generation=generation, letter=self._letter(
                        event, sub, exc, attempts=1, generation=generation,
                        reason=f"subscription {sub.name} returned a payload that {sub.task_type} refuses"))
                except Exception as exc:
                    failed.append((entry, event, sub, exc))
                    continue
                if trigger.tasks or trigger.letter:
                    triggers.append(trigger)
        return entries, triggers, failed

    def _plan(self, event: Event, sub: Subscription, generation: int = 0) -> Trigger:
        """Run ``sub`` for ``event`` and validate its payloads into tasks (the place a tracing span wraps)."""
        headers = {"mt_event_id": event.id, "mt_event_type": event.type, "mt_subscription": sub.name}
        fields = {"event_id": event.id, "event_type": event.type, "subscription": sub.name}
        if generation:
            headers["mt_replay_generation"] = str(generation)
            fields["replay_generation"] = str(generation)
        with tracing.consume_event(event.type, event.trace, event_id=event.id, subscription=sub.name):
            tasks = [
                self.dispatcher.prepare(sub.task_type, payload, priority=sub.priority,
                                        task_id=sub.task_id(event.id, index, generation), headers=headers,
                                        fields=fields)
                for index, payload in enumerate(sub.payloads(event))
            ]
        return Trigger(event, sub, tasks=tasks, generation=generation)

    def _count_failures(self, clients: LinkClients, failed: list[Failure]) -> list[Trigger]:
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
                reason: str, generation: int = 0) -> DeadLetter:
        spec = REGISTRY.find(sub.task_type)
        priority = sub.priority or (spec.priority if spec else None)
        task_id = sub.task_id(event.id, generation=generation)
        return DeadLetter(
            id=task_id, service=sub.service, reason=reason, error=f"{type(exc).__name__}: {exc}",
            task_id=task_id, task_type=sub.task_type, priority=priority.value if priority else None,
            payload=event.model_dump(mode="json"), traceback=format_traceback(exc), attempts=attempts,
            message=event.to_json().decode(), replayable=False,
        )

    def _commit(self, clients: LinkClients, triggers: list[Trigger], done: list[Entry]) -> list[Trigger]:
        """Queue ``triggers`` on their services' Redis, then acknowledge ``done``; on the streams' Redis
        (where everything is in the usual one-Redis set-up) the acknowledgement joins the same transaction.
        Returns the triggers queued now (not those that had happened before)."""
        fresh: list[Trigger] = []
        stream_url = self.settings.broker_url()
        by_url: dict[str, list[Trigger]] = {}
        for trigger in triggers:
            service = trigger.tasks[0].spec.service if trigger.tasks else trigger.sub.service
            by_url.setdefault(self.settings.broker_url(service), []).append(trigger)
        for url, group in by_url.items():
            if url != stream_url:
                fresh += self._commit_once(clients.url(url), group, [])
        fresh += self._commit_once(clients.url(stream_url), by_url.get(stream_url, []), done)
        self.stats.events += len(done)
        return fresh

    def _commit_once(self, client: redis.Redis, triggers: list[Trigger], done: list[Entry]) -> list[Trigger]:
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
            with self._letters_lock:
                self.stats.dead_letters += sum(1 for t in fresh if t.letter is not None)
            self.stats.duplicates += len(triggers) - len(fresh)
            for trigger in fresh:
                if trigger.letter is not None:
                    log.error("bridge: dead-lettered %s under %s: %s (%s)", trigger.letter.id,
                              trigger.letter.service, trigger.letter.reason, trigger.letter.error)
            return fresh
        raise redis.RedisError(f"could not queue {len(triggers)} triggers: their markers kept changing")

    def _queue_letter(self, pipe: redis.client.Pipeline, letter: DeadLetter) -> None:
        self.platform.status.transition(
            pipe, letter.id, Status.DEAD_LETTERED, attempt=letter.attempts,
            fields={"type": letter.task_type, "service": letter.service, "priority": letter.priority,
                    "error": letter.error, "error_type": letter.error.split(":", 1)[0], "reason": letter.reason,
                    "created_at": repr(time.time())},
        )
        self.platform.dead_letters.add(pipe, letter)

    def file_malformed(self, clients: LinkClients, channel: str, raw: bytes | None, error: str, where: str) -> None:
        service = OWNERS[channel]
        text = raw.decode("utf-8", "replace") if raw is not None else None
        letter = DeadLetter(
            id=str(uuid.uuid5(MALFORMED_NAMESPACE, f"{channel}\n{text}")), service=service,
            reason=f"malformed event on {channel} ({where})", error=error, payload=text, message=text,
            replayable=False,
        )
        self.platform.dead_letters.add(clients.service(service), letter)
        with self._letters_lock:
            self.stats.dead_letters += 1
        log.error("bridge: dead-lettered a malformed event on %s under %s: %s", channel, service, error)


def _by_stream(entries: list[Entry]) -> dict[str, list[str]]:
    by_stream: dict[str, list[str]] = {}
    for entry in entries:
        by_stream.setdefault(entry.stream, []).append(entry.entry_id)
    return by_stream
