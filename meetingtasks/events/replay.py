"""Event replay: run the bridge's subscriptions again over a window of a channel's stream.

After a handler bug is fixed, say: ``replay_events("meeting_events", since="2026-12-05T06:00:00Z")`` runs
every subscription of that channel (or one, ``subscription=NAME``) over the events of the window still in
the stream (acknowledged events stay ``event_replay_retention_s``, see :mod:`.retention`) and queues the
tasks they return, through the bridge's own path (:meth:`TriggerWriter.plan` and
:meth:`TriggerWriter.replay`).

A replay is deliberate, so the once-per-(event, subscription) rule does not swallow it: each replay runs
under a **generation** of its own (``P event-replay-generation``), which goes into the derived task ids
(:meth:`Subscription.task_id`). A replay is itself once-only: it is recorded under (channel, since, until,
subscription) in ``P event-replays``, and the same replay asked again queues nothing unless ``again``
(which takes a new generation). A replay cut short (a subscription raised, the process died) stays
``running``: asked again, it keeps its generation and queues only what is missing (the task ids' status
records say what was queued), then is ``done``. Entries are never acknowledged here: they belong to the
bridges' consumer group.
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from meetingtasks.errors import InvalidReplay
from meetingtasks.events.channels import CHANNELS
from meetingtasks.events.reconnect import LinkClients
from meetingtasks.events.subscriptions import Subscription, load_subscriptions
from meetingtasks.events.triggers import BridgeStats, Row, Trigger, TriggerWriter
from meetingtasks.platform import Platform, get_platform

_STREAM_ID = re.compile(r"^(\d+)-(\d+)$")
_MAX_SEQ = 18446744073709551615  # the largest sequence of a stream id: "<ms>-<this>" ends a millisecond
#: ``until`` of a replay with no end: the stream's newest entry when it starts.
OPEN_END = "+"


def stream_position(text: str, *, end: bool = False, what: str = "--since") -> str:
    """A stream id from epoch seconds, an ISO 8601 time (UTC unless it says otherwise) or a stream id.

    A time names a millisecond: as a start, its first id; as an ``end``, its last (the window includes it).
    Anything else is an :class:`InvalidReplay` naming ``what``."""
    value = text.strip()
    match = _STREAM_ID.match(value)
    if match:
        return f"{int(match[1])}-{int(match[2])}"
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidReplay(f"{what} {text!r} is not epoch seconds, an ISO 8601 time nor a stream id "
                                "(<ms>-<seq>)") from None
        seconds = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    if not seconds >= 0 or seconds > 1e13:  # also refuses nan
        raise InvalidReplay(f"{what} {text!r} is out of range (epoch seconds from 0)")
    ms = int(seconds * 1000)
    return f"{ms}-{_MAX_SEQ if end else 0}"


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class SubscriptionCount:
    """What a replay did (or would do, in a dry run) through one subscription."""

    name: str
    task_type: str
    events: int = 0  # events of the window this subscription runs on
    tasks: int = 0  # tasks queued (dry run: that would be queued)
    already: int = 0  # tasks of this generation queued by an earlier, cut-short run of the same replay
    failed: int = 0  # runs that raised: asking for the same replay again retries them
    dead_lettered: int = 0  # runs whose payload the task type refuses (filed as dead letters)


@dataclass
class ReplayReport:
    channel: str
    since: str  # stream ids
    until: str
    generation: int  # 0 in a dry run that would take a new one
    dry_run: bool
    repeated: bool  # this replay had been done before: nothing queued (``again`` replays it anew)
    events: int = 0  # events of the window still in the stream
    subscriptions: list[SubscriptionCount] = field(default_factory=list)

    @property
    def tasks(self) -> int:
        return sum(s.tasks for s in self.subscriptions)

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.subscriptions)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "tasks": self.tasks, "failed": self.failed}


class EventReplay:
    """Replays of one platform's channels with the subscriptions of the services and ``includes``."""

    def __init__(self, platform: Platform, *, includes: Iterable[str] = ()) -> None:
        self.platform = platform
        self.keys = platform.keys
        self.subscriptions = load_subscriptions([*platform.settings.include, *includes])

    def run(self, channel: str, *, since: str, until: str | None = None, subscription: str | None = None,
            dry_run: bool = False, again: bool = False) -> ReplayReport:
        """Replay ``channel`` over [``since``, ``until``] (both included; ``until`` None: up to the newest
        event). Raises :class:`InvalidReplay` for an unknown channel or subscription or a wrong window."""
        subs = self._chosen(channel, subscription)
        start = stream_position(since, what="--since")
        end = stream_position(until, end=True, what="--until") if until is not None else OPEN_END
        if end != OPEN_END and _id_key(start) > _id_key(end):
            raise InvalidReplay(f"--since {since!r} is after --until {until!r}: the window is empty")
        counts = {s.name: SubscriptionCount(s.name, s.task_type) for s in subs}
        started_at = time.time()
        replay_key = "\n".join((channel, start, end, subscription or "*"))
        client = self.platform.redis()
        record = _record(client.hget(self.keys.event_replays, replay_key))
        repeated = record is not None and record["state"] == "done" and not again
        if dry_run or repeated:
            generation = int(record["generation"]) if record is not None and not again else 0
        else:
            generation = self._generation(replay_key, record, again)
        report = ReplayReport(channel, start, end, generation, dry_run, repeated,
                              subscriptions=list(counts.values()))
        writer = TriggerWriter(self.platform, BridgeStats())
        names = set(counts)
        clients = LinkClients(self.platform.settings)
        try:
            for rows in self._pages(channel, start, end):
                report.events += len(rows)
                _count_events(rows, subs, counts)
                if repeated:
                    continue
                _, triggers, failed = writer.plan(rows, generation=max(generation, 1),
                                                  only=lambda sub: sub.name in names)
                for _, _, sub, _ in failed:
                    counts[sub.name].failed += 1
                fresh = triggers if dry_run else writer.replay(clients, triggers)
                self._count(counts, triggers, fresh)
        finally:
            clients.close()
        if not dry_run and not repeated and report.failed == 0:
            client.hset(self.keys.event_replays, replay_key, _dumps(
                {"generation": generation, "state": "done", "started_at": (record or {}).get("started_at", started_at),
                 "finished_at": time.time(), "tasks": report.tasks}))
        return report

    def _chosen(self, channel: str, subscription: str | None) -> list[Subscription]:
        if channel not in CHANNELS:
            raise InvalidReplay(f"unknown channel {channel!r}; channels: {', '.join(sorted(CHANNELS))}")
        on_channel = [s for s in self.subscriptions if s.channel == channel]
        if subscription is None:
            return on_channel
        chosen = [s for s in on_channel if s.name == subscription]
        if not chosen:
            names = [s.name for s in self.subscriptions]
            elsewhere = next((s for s in self.subscriptions if s.name == subscription), None)
            if elsewhere is not None:
                raise InvalidReplay(f"subscription {subscription!r} is on channel {elsewhere.channel}, not {channel}")
            close = difflib.get_close_matches(subscription, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else " (see `meetingtasks events subscriptions`)"
            raise InvalidReplay(f"unknown subscription {subscription!r}{hint}")
        return chosen

    def _generation(self, replay_key: str, record: dict[str, Any] | None, again: bool) -> int:
        """The generation this replay runs under: a cut-short run's own, else a new one (``again``: always)."""
        if record is not None and not again:
            return int(record["generation"])  # state "running": finish that run
        client = self.platform.redis()
        generation = int(client.incr(self.keys.event_replay_generation))
        fresh = _dumps({"generation": generation, "state": "running", "started_at": time.time()})
        if again:
            client.hset(self.keys.event_replays, replay_key, fresh)
            return generation
        if client.hsetnx(self.keys.event_replays, replay_key, fresh):
            return generation
        # The same replay started elsewhere meanwhile: run under its generation (its ids), never a second one.
        raced = _record(client.hget(self.keys.event_replays, replay_key))
        return int(raced["generation"]) if raced is not None else generation

    def _pages(self, channel: str, start: str, end: str) -> Iterator[list[Row]]:
        """The window's entries, a page of ``bridge_batch`` at a time; an open end stops at the newest entry
        when the replay began, so that a busy channel does not keep it going."""
        client = self.platform.redis()
        stream = self.keys.event_stream(channel)
        if end == OPEN_END:
            newest: Any = client.xrevrange(stream, count=1)
            if not newest:
                return
            end = _text(newest[0][0])
        lower = start
        while True:
            entries: Any = client.xrange(stream, lower, end, count=self.platform.settings.bridge_batch)
            if not entries:
                return
            yield [(stream, _text(eid), fields) for eid, fields in entries]
            lower = f"({_text(entries[-1][0])}"

    @staticmethod
    def _count(counts: dict[str, SubscriptionCount], triggers: list[Trigger], fresh: list[Trigger]) -> None:
        queued = {id(t) for t in fresh}
        for trigger in triggers:
            count = counts[trigger.sub.name]
            if id(trigger) not in queued:
                count.already += len(trigger.tasks)
            elif trigger.letter is not None:
                count.dead_lettered += 1
            else:
                count.tasks += len(trigger.tasks)


def replay_events(channel: str, *, since: str | float, until: str | float | None = None,
                  subscription: str | None = None, dry_run: bool = False, again: bool = False,
                  includes: Iterable[str] = (), platform: Platform | None = None) -> ReplayReport:
    """Run the bridge's subscriptions of ``channel`` again over the events of [``since``, ``until``] still in
    its stream (times: epoch seconds, ISO 8601 or stream ids). Once-only per (channel, window,
    subscription) unless ``again``; ``dry_run`` counts what would be queued and writes nothing."""
    replay = EventReplay(platform or get_platform(), includes=includes)
    return replay.run(channel, since=str(since), until=None if until is None else str(until),
                      subscription=subscription, dry_run=dry_run, again=again)


def list_subscriptions(includes: Iterable[str] = (), platform: Platform | None = None) -> list[Subscription]:
    """The subscriptions a bridge of this platform runs (the services' and those of ``includes`` and
    ``MEETINGTASKS_INCLUDE``), by channel and name."""
    settings = (platform or get_platform()).settings
    subs = load_subscriptions([*settings.include, *includes])
    return sorted(subs, key=lambda s: (s.channel, s.name))


def _count_events(rows: list[Row], subs: list[Subscription], counts: dict[str, SubscriptionCount]) -> None:
    """Count, per subscription, the events of ``rows`` of its type (whether or not it returns tasks)."""
    for _, _, fields in rows:
        try:
            event_type = orjson.loads((fields or {}).get(b"event", b"null"))["type"]
        except (orjson.JSONDecodeError, TypeError, KeyError):
            continue  # malformed: no subscription runs on it
        for sub in subs:
            if sub.event_type == event_type:
                counts[sub.name].events += 1


def _record(raw: bytes | str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    data: dict[str, Any] = orjson.loads(raw)
    return data


def _dumps(data: dict[str, Any]) -> str:
    return orjson.dumps(data).decode()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
