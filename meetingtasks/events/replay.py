"""Event replay: run the bridge's subscriptions again over a window of a channel's stream.

After a handler bug is fixed, say: ``replay_events("meeting_events", since="2026-12-05T06:00:00Z")`` runs
every subscription of that channel (or one, ``subscription=NAME``) over the events of the window still in
the stream (acknowledged events stay ``event_replay_retention_s``, see :mod:`.retention`) and queues the
tasks they return, through the bridge's own path (:meth:`TriggerWriter.plan` and
:meth:`TriggerWriter.replay`).

A replay is deliberate, so the once-per-(event, subscription) rule does not swallow it: each replay runs
under a **generation** of its own (``P event-replay-generation``), which goes into the derived task ids
(:meth:`Subscription.task_id`). A replay is itself once-only, per subscription: it is recorded under (channel,
since, until, subscription name) in ``P event-replays``, so a run with more subscriptions (``--include``) runs
only those not replayed over that window yet, and the same replay asked again queues nothing unless ``again``
(which takes a new generation). A replay with no ``until`` covers up to the newest entry when it starts and
records that entry: asked again later, it covers the entries published since, under the same generation. A
replay cut short (a subscription raised, the process died) stays ``running``: asked again, it keeps its
generation and queues only what is missing (the task ids' status records say what was queued), then is
``done``. Entries are never acknowledged here: they belong to the bridges' consumer group.
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from meetingtasks.core.errors import InvalidReplay
from meetingtasks.events.channels import CHANNELS
from meetingtasks.events.reconnect import LinkClients
from meetingtasks.events.subscriptions import Subscription, load_subscriptions
from meetingtasks.events.triggers import BridgeStats, Row, Trigger, TriggerWriter
from meetingtasks.store.platform import Platform, get_platform

_STREAM_ID = re.compile(r"^(\d+)-(\d+)$")
_MAX_SEQ = 18446744073709551615  # the largest sequence of a stream id: "<ms>-<this>" ends a millisecond
#: ``until`` of a replay with no end: the stream's newest entry when it starts.
OPEN_END = "+"
#: ISO 8601 dates that :meth:`datetime.fromisoformat` does not read and that look like a stream id: year-month
#: (``2000-01``) and ordinal (``2000-001``, the 1st day of 2000).
_YEAR_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_ORDINAL_DATE = re.compile(r"^(\d{4})-(\d{3})$")
#: A stream id's milliseconds from here on (1970-04-26): below, "<n>-<m>" is as likely a date as an id, and
#: read as the wrong one it replays another window without a word.
_MIN_STREAM_MS = 10**10
#: The last second of the year 9999 (what ISO 8601 and :class:`datetime` can name); a larger number of epoch
#: seconds is almost surely milliseconds (a stream id's unit, JavaScript's ``Date.now()``).
_MAX_SECONDS = 253402300799


def stream_position(text: str, *, end: bool = False, what: str = "--since") -> str:
    """A stream id from epoch seconds, an ISO 8601 time (UTC unless it says otherwise) or a stream id.

    A time names a millisecond: as a start, its first id; as an ``end``, its last (the window includes it).
    ``<ms>-<seq>`` is a stream id only when ``ms`` is plausibly milliseconds (>= 10^10); ``YYYY-MM`` and
    ``YYYY-DDD`` are dates; any other ``<n>-<m>`` is refused as ambiguous. Anything else is an
    :class:`InvalidReplay` naming ``what``."""
    value = text.strip()
    seconds = _date_seconds(value, text, what)
    match = _STREAM_ID.match(value)
    if seconds is None and match:
        if int(match[1]) < _MIN_STREAM_MS:
            raise InvalidReplay(f"{what} {text!r} is ambiguous: a stream id's milliseconds are 10^10 or more; give "
                                "a date as ISO 8601 (2000-01-01) or a time as epoch seconds")
        return f"{int(match[1])}-{int(match[2])}"
    if seconds is None:
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise InvalidReplay(f"{what} {text!r} is not epoch seconds, an ISO 8601 time nor a stream id "
                                    "(<ms>-<seq>)") from None
            seconds = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    if not seconds >= 0:  # also refuses nan
        raise InvalidReplay(f"{what} {text!r} is out of range (epoch seconds from 0)")
    if seconds > _MAX_SECONDS:
        as_ms = seconds / 1000
        hint = f"; in epoch milliseconds? as seconds that is {as_ms:.0f}" if as_ms <= _MAX_SECONDS else ""
        raise InvalidReplay(f"{what} {text!r} is out of range (epoch seconds up to the year 9999){hint}")
    ms = int(seconds * 1000)
    return f"{ms}-{_MAX_SEQ if end else 0}"


def _date_seconds(value: str, text: str, what: str) -> float | None:
    """Epoch seconds of ``value`` when it is a year-month or an ordinal date (UTC midnight), else None."""
    year_month, ordinal = _YEAR_MONTH.match(value), _ORDINAL_DATE.match(value)
    try:
        if year_month:
            when = datetime(int(year_month[1]), int(year_month[2]), 1, tzinfo=UTC)
        elif ordinal:
            when = datetime(int(ordinal[1]), 1, 1, tzinfo=UTC) + timedelta(days=int(ordinal[2]) - 1)
            if when.year != int(ordinal[1]):  # day 0 or 366 of a common year
                raise ValueError(value)
        else:
            return None
    except ValueError:
        raise InvalidReplay(f"{what} {text!r} is not a date (YYYY-MM or YYYY-DDD)") from None
    return when.timestamp()


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
        client = self.platform.redis()
        # An open end is the newest entry now: what this run covers, recorded so that a later run covers the rest.
        last = self._newest(channel) if end == OPEN_END else end
        keys = {s.name: _replay_key(channel, start, end, s.name) for s in subs}
        raw: list[Any] = client.hmget(self.keys.event_replays, list(keys.values())) if keys else []
        records = {name: _record(value) for name, value in zip(keys, raw, strict=True)}
        runs, generation = self._runs(records, keys, last, dry_run=dry_run, again=again, started_at=started_at)
        repeated = bool(subs) and not runs
        report = ReplayReport(channel, start, end, generation, dry_run, repeated,
                              subscriptions=list(counts.values()))
        groups: dict[tuple[int, str | None], set[str]] = {}
        for name, run in runs.items():
            groups.setdefault(run, set()).add(name)
        writer = TriggerWriter(self.platform, BridgeStats())
        clients = LinkClients(self.platform.settings)
        try:
            for rows in self._pages(channel, start, last):
                report.events += len(rows)
                _count_events(rows, subs, counts)
                for (run_generation, after), names in groups.items():
                    todo = rows if after is None else [row for row in rows if _id_key(row[1]) > _id_key(after)]
                    if not todo:
                        continue
                    _, triggers, failed = writer.plan(todo, generation=max(run_generation, 1),
                                                      only=_named(names))
                    for _, _, sub, _ in failed:
                        counts[sub.name].failed += 1
                    fresh = triggers if dry_run else writer.replay(clients, triggers)
                    self._count(counts, triggers, fresh)
        finally:
            clients.close()
        if not dry_run:
            self._record_done(runs, records, keys, counts, last, started_at)
        return report

    def _runs(self, records: dict[str, dict[str, Any] | None], keys: dict[str, str], last: str | None, *,
              dry_run: bool, again: bool, started_at: float) -> tuple[dict[str, tuple[int, str | None]], int]:
        """Per subscription to run: (its generation, the id after which its events run, None: all of them),
        and the report's generation. A subscription whose replay of the window is done does not run, except an
        open-ended one over the entries published since it reached (under its generation: the same replay)."""
        runs: dict[str, tuple[int, str | None]] = {}
        fresh: list[str] = []
        for name, record in records.items():
            if record is None or again:
                fresh.append(name)
            elif record["state"] != "done":
                runs[name] = (int(record["generation"]), None)  # cut short: finish it, the status records dedupe
            elif last is not None and "reached" in record and _beyond(last, record["reached"]):
                reached = record["reached"]  # None: the stream was empty then
                runs[name] = (int(record["generation"]), None if reached is None else str(reached))
        generation = 0
        if fresh and not dry_run:
            generation = self._generation(keys, fresh, runs, again=again, started_at=started_at)
        elif not fresh:
            known = [run[0] for run in runs.values()] or [int(r["generation"]) for r in records.values() if r]
            generation = known[0] if known else 0
        if dry_run:
            runs.update((name, (generation, None)) for name in fresh)
        return runs, generation

    def _generation(self, keys: dict[str, str], fresh: list[str], runs: dict[str, tuple[int, str | None]], *,
                    again: bool, started_at: float) -> int:
        """A new generation for the ``fresh`` subscriptions (recorded ``running``, added to ``runs``); one whose
        replay of the window was started elsewhere meanwhile runs under that one's generation, never a second."""
        client = self.platform.redis()
        generation = int(client.incr(self.keys.event_replay_generation))
        record = _dumps({"generation": generation, "state": "running", "started_at": started_at})
        for name in fresh:
            if again or client.hsetnx(self.keys.event_replays, keys[name], record):
                if again:
                    client.hset(self.keys.event_replays, keys[name], record)
                runs[name] = (generation, None)
                continue
            raced = _record(client.hget(self.keys.event_replays, keys[name]))
            runs[name] = (int(raced["generation"]) if raced is not None else generation, None)
        return generation

    def _record_done(self, runs: dict[str, tuple[int, str | None]], records: dict[str, dict[str, Any] | None],
                     keys: dict[str, str], counts: dict[str, SubscriptionCount], last: str | None,
                     started_at: float) -> None:
        """Record each subscription that ran without a raise as done (up to ``last``); one that raised stays as
        it was, so that the same replay asked again retries it under the same generation."""
        done: dict[Any, Any] = {}
        for name, (generation, _) in runs.items():
            if counts[name].failed:
                continue
            record = records[name] or {}
            tasks = counts[name].tasks + (int(record.get("tasks", 0)) if record.get("state") == "done" else 0)
            done[keys[name]] = _dumps({"generation": generation, "state": "done", "tasks": tasks,
                                       "started_at": record.get("started_at", started_at),
                                       "finished_at": time.time(), "reached": last})
        if done:
            self.platform.redis().hset(self.keys.event_replays, mapping=done)

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

    def _newest(self, channel: str) -> str | None:
        newest: Any = self.platform.redis().xrevrange(self.keys.event_stream(channel), count=1)
        return _text(newest[0][0]) if newest else None

    def _pages(self, channel: str, start: str, end: str | None) -> Iterator[list[Row]]:
        """The window's entries up to ``end`` (None: an empty stream), a page of ``bridge_batch`` at a time; an
        open end is the newest entry when the replay began, so that a busy channel does not keep it going."""
        if end is None:
            return
        client = self.platform.redis()
        stream = self.keys.event_stream(channel)
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


def _beyond(last: str, reached: str | None) -> bool:
    """True when the stream's newest entry ``last`` is after what an open-ended replay ``reached``."""
    return reached is None or _id_key(last) > _id_key(reached)


def _named(names: set[str]) -> Callable[[Subscription], bool]:
    return lambda sub: sub.name in names


def _replay_key(channel: str, start: str, end: str, subscription: str) -> str:
    """The field of ``P event-replays`` recording one subscription's replay of a window: per subscription, so
    that a run with more subscriptions (``--include``) runs those not replayed yet."""
    return "\n".join((channel, start, end, subscription))


def _record(raw: bytes | str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    data: dict[str, Any] = orjson.loads(raw)
    return data


def _dumps(data: dict[str, Any]) -> str:
    return orjson.dumps(data).decode()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
