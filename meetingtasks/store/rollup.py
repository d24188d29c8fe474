"""The one record of task traffic over the last hour, in Redis: ``top`` and the console's charts read it.

**Recorded where transitions are recorded.** Every accepted status transition of a run (STARTED, RETRYING and the
terminal ones) is counted by the Lua call that records it (lua/fetch.lua, lua/transition.lua and the moves, through
the ``rollup`` prelude part): nothing else hears a task's traffic, so no count depends on an exporter or a
subscriber being up. One count, two views of it, written in the same call:

* per task type and :data:`SLOT_S`-second slot, for ``top``: ``P top:<slot start s>`` (hash, task type -> 1, the
  slot's index) and ``P top:<slot start s>:<type>`` (hash, ``<STATUS>|<bucket>`` -> transitions to that status
  whose duration fell in that bucket: the queue wait ``wait_s`` of a STARTED, the run time ``run_s`` of any other;
  bucket ``-`` when the transition carried none), kept :data:`RETENTION_S`;
* per service and priority and minute, for the console's charts: ``P rollup:<minute>`` (epoch s // 60; fields
  ``<svc>|<priority>|started|succeeded|failed`` by :data:`CHART_SERIES`, ``<svc>|wait|<i>``: STARTEDs whose wait
  fell in bucket ``i`` of :data:`WAIT_BUCKETS_S`, and ``<svc>|<priority>|depth``, the queue's length that the
  exporter samples), kept :data:`KEEP_S`.

Both are an hour of history (:data:`HISTORY_S`) plus the width of their slot and a margin, bounded by time
whatever the traffic.

**Cost on the hot path: no command per task.** A script adds its counts up in a Lua table. The one-task scripts
(transition, moves) write them when they end (``mt_rollup_flush``). The worker's fetch, one call per task in a
prefork worker, hands them back instead and the worker adds them up (:class:`PendingCounts`) until the first
fetch sent :data:`WRITE_INTERVAL_S` after the last write carries them all: per interval, one ``HINCRBY`` per
distinct field and a few ``EXPIRE``, whatever the rate. An idle worker's call writes at once.

**Buckets.** ``top``'s durations go into log-scale buckets, :data:`BUCKETS_PER_DOUBLING` per doubling of
microseconds (each ~19 % wide), so a percentile read from them is within ~9 % of the true value; the charts' wait
histogram uses the round bounds of :data:`WAIT_BUCKETS_S` and shows a percentile as its bucket's upper bound. The
rules live here once; the Lua's constants are generated from them (:func:`lua_definitions`; the functions are in
lua/prelude/rollup.lua), and the keys are derived in Lua from the status channel that every recording script
receives (``<prefix>status`` -> ``<prefix>top:<slot>``, ``<prefix>rollup:<minute>``): the names of
:meth:`meetingtasks.store.keys.Keys.top_slot`, :meth:`~meetingtasks.store.keys.Keys.top_type` and
:meth:`~meetingtasks.store.keys.Keys.rollup`. A type's slot hash stays in Redis' compact encoding: an hour of 30 types
busy all the time, waits and runs spread from 1 ms to 2 s, takes about 7 MB (docs/tools.md).
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from meetingtasks.core.loop import BackgroundThread
from meetingtasks.core.priority import PRIORITY_ORDER, queue_name
from meetingtasks.store.keys import Keys
from meetingtasks.store.status_schema import PHASES, Phase, Status

if TYPE_CHECKING:
    from meetingtasks.store.platform import Platform

log = logging.getLogger(__name__)

#: The history both views show (s).
HISTORY_S = 3_600
#: Width of one slot of the per-type view (s): ``top``'s "last minute" is the last 60 to 70 s.
SLOT_S = 10
#: How long a per-type slot is kept (s): the history and a margin for a slow reader.
RETENTION_S = HISTORY_S + 2 * SLOT_S
#: How long a minute of the charts is kept (s): the history, the minute being written, and a margin.
KEEP_S = HISTORY_S + 300
#: Log-scale histogram resolution: buckets per doubling of a duration in microseconds. Four keep a type's slot
#: under Redis' compact-hash limit (128 fields) for waits and runs spread over a thousandfold range.
BUCKETS_PER_DOUBLING = 4
#: Statuses counted per type: every state of a run (status_schema's phases past waiting).
COUNTED = tuple(s.value for s in Status if PHASES[s] is not Phase.WAITING)
#: The charts' series a status counts in: a start, or how a run ended by its phase (status_schema): ``failed`` is
#: every run that ended without a result.
CHART_SERIES = {Status.STARTED.value: "started",
                **{s.value: PHASES[s].value for s in Status if PHASES[s] in (Phase.SUCCEEDED, Phase.FAILED)}}
#: Chart series: the counter fields, per second in the charts.
RATES = ("started", "succeeded", "failed")
#: Upper bounds (s) of the charts' dispatch -> start wait buckets; the last bucket is everything above.
WAIT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                  300.0, 1800.0)
#: A busy worker writes the counts of its fetches at most this long after they happened (s): until then they ride
#: back and forth with the fetches it sends anyway (see :class:`PendingCounts`).
WRITE_INTERVAL_S = 1.0
#: How often the exporter samples the queue depths into the charts' minute.
FLUSH_INTERVAL_S = 5.0
#: The depth sampler's lease outlives a few missed samples, then another exporter takes over.
LEASE_S = 30

def bucket_of(seconds: float) -> int:
    """The histogram bucket of a duration: 0 below a microsecond, then :data:`BUCKETS_PER_DOUBLING` per doubling."""
    micros = seconds * 1e6
    if micros < 1:
        return 0
    return math.floor(math.log2(micros) * BUCKETS_PER_DOUBLING) + 1


def bucket_seconds(bucket: int) -> float:
    """A bucket's representative duration: its geometric middle (s)."""
    if bucket <= 0:
        return 0.0
    return float(2 ** ((bucket - 0.5) / BUCKETS_PER_DOUBLING) / 1e6)


def slot_of(time_s: float) -> int:
    """The start (epoch s) of the slot holding ``time_s``."""
    return int(time_s // SLOT_S) * SLOT_S


def lua_definitions() -> str:
    """The generated head of the ``rollup`` Lua prelude part (lua/prelude/rollup.lua has its functions): the slots,
    lifetimes, bucket rules and counted statuses of both views, so that the Lua counts what this module reads."""
    counted = ", ".join(f"{name}=true" for name in COUNTED)
    series = ", ".join(f"{status}='{name}'" for status, name in CHART_SERIES.items())
    bounds = ", ".join(repr(bound) for bound in WAIT_BUCKETS_S)
    return (f"local MT_ROLLUP_SLOT_S = {SLOT_S}\n"
            f"local MT_ROLLUP_RETENTION_S = {RETENTION_S}\n"
            f"local MT_ROLLUP_BUCKETS_PER_DOUBLING = {BUCKETS_PER_DOUBLING}\n"
            f"local MT_ROLLUP_COUNTED = {{{counted}}}\n"
            f"local MT_ROLLUP_CHART_SERIES = {{{series}}}\n"
            f"local MT_ROLLUP_WAIT_BOUNDS = {{{bounds}}}\n"
            f"local MT_ROLLUP_KEEP_S = {KEEP_S}\n")


class PendingCounts:
    """The ``top`` counts a worker's fetches handed back and no call has written yet (lua/fetch.lua): field
    ``(slot index key, task type, field)`` -> n, as the script returned them (bytes; written back unread).

    A fetch of a busy worker records its starts and outcomes but writes no count: it returns them, the worker adds
    them up here, and the first fetch sent :data:`WRITE_INTERVAL_S` after the last write carries them all and
    writes them with its own (per type, one ``HINCRBY`` per field in the interval rather than three commands per
    fetch). An idle worker's call (nothing popped, or the flush of an idle channel) writes at once, so ``top`` shows
    a finished load as soon as the worker waits for work. What a worker holds here when it is killed is lost (at
    most an interval of its counts); a warm shutdown writes it."""

    def __init__(self) -> None:
        self._counts: dict[tuple[Any, Any, Any], int] = {}
        self.written_at = time.monotonic()

    def __bool__(self) -> bool:
        return bool(self._counts)

    def add(self, flat: list[Any]) -> None:
        """Add a fetch's handed-back counts: ``[slot, type, field, n, ...]``."""
        counts = self._counts
        for i in range(0, len(flat) - 3, 4):
            key = (flat[i], flat[i + 1], flat[i + 2])
            counts[key] = counts.get(key, 0) + int(flat[i + 3])

    def due(self) -> bool:
        return bool(self._counts) and time.monotonic() - self.written_at >= WRITE_INTERVAL_S

    def take(self) -> list[Any]:
        """All the counts as FETCH's carried ARGV (slot, type, field, n, ...), forgotten here; see :meth:`put_back`."""
        counts, self._counts = self._counts, {}
        self.written_at = time.monotonic()
        return [v for (slot, task_type, name), n in counts.items() for v in (slot, task_type, name, n)]

    def put_back(self, flat: list[Any]) -> None:
        """Counts taken for a call that Redis refused before running it: kept for the next."""
        self.add(flat)


def minute_of(time_s: float) -> int:
    return int(time_s // 60)


def wait_bucket(wait_s: float) -> int:
    """Index in :data:`WAIT_BUCKETS_S` of the first bound >= ``wait_s`` (len for above all)."""
    return bisect.bisect_left(WAIT_BUCKETS_S, wait_s)


def quantile_s(buckets: dict[int, int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a wait histogram, as the upper bound of its bucket; ``None`` when empty."""
    total = sum(buckets.values())
    if total == 0:
        return None
    rank = math.ceil(q * total)
    seen = 0
    for index in sorted(buckets):
        seen += buckets[index]
        if seen >= rank:
            return WAIT_BUCKETS_S[index] if index < len(WAIT_BUCKETS_S) else WAIT_BUCKETS_S[-1] * 2
    return None


# --- the per-service view: the console's charts -------------------------------------------------------------
class RollupRecorder:
    """The exporter's part of the charts: samples each queue's depth into the minute every ``interval_s``
    (``start()``/``stop()``; ``stop()`` flushes what is left and is safe twice). Only one exporter writes (a lease
    in ``P rollup-writer``, renewed at each flush); without one the charts have their counts but no depth.

    :meth:`observe` counts a transition heard as a status event into the same minute, written at the next flush:
    for a process that hears transitions rather than records them. The platform's own are counted by the scripts
    that record them, so the exporter does not feed its events here (they would count twice); two recorders that
    hear the same events count them once, through the lease."""

    def __init__(self, platform: Platform, *, interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.platform = platform
        self.interval_s = interval_s
        self.instance = uuid.uuid4().hex
        self._counts: defaultdict[tuple[int, str], int] = defaultdict(int)
        self._lock = threading.Lock()
        self._runner = BackgroundThread("rollup-recorder", self._run, join_timeout_s=10)
        self._stop = self._runner.stopping
        self._failing = False

    def observe(self, event: dict[str, Any]) -> None:
        name = CHART_SERIES.get(str(event.get("status")))
        service, priority = event.get("service"), event.get("priority")
        if name is None or not isinstance(service, str) or not isinstance(priority, str):
            return
        when = event.get("time")
        minute = minute_of(when if isinstance(when, int | float) else time.time())
        wait_s = event.get("wait_s")
        with self._lock:
            self._counts[(minute, f"{service}|{priority}|{name}")] += 1
            if name == "started" and isinstance(wait_s, int | float):
                self._counts[(minute, f"{service}|wait|{wait_bucket(max(0.0, float(wait_s)))}")] += 1

    def start(self) -> RollupRecorder:
        self._runner.start()
        return self

    def stop(self) -> None:
        if self._runner.stop():
            self._flush_quietly()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._flush_quietly()

    def _flush_quietly(self) -> None:
        try:
            self.flush()
            if self._failing:
                log.info("rollup recorder: Redis writable again")
            self._failing = False
        except (redis.RedisError, OSError) as exc:
            if not self._failing:
                log.warning("rollup recorder: cannot write to Redis (%s); the console's charts miss this time", exc)
            self._failing = True

    def _holds_lease(self, client: redis.Redis) -> bool:
        key = self.platform.keys.rollup_writer
        if client.set(key, self.instance, nx=True, ex=LEASE_S):
            return True
        holder = client.get(key)
        if holder is not None and (holder.decode() if isinstance(holder, bytes) else str(holder)) == self.instance:
            client.expire(key, LEASE_S)
            return True
        return False

    def flush(self, now_s: float | None = None) -> None:
        """Write the counts gathered since the last flush and this moment's queue depths."""
        with self._lock:
            counts, self._counts = self._counts, defaultdict(int)
        client = self.platform.redis()
        if not self._holds_lease(client):
            return  # another exporter writes the rollup; these events are in its counts too
        now_s = time.time() if now_s is None else now_s
        depths = self._depths()
        keys = self.platform.keys
        with client.pipeline(transaction=False) as pipe:
            minutes = {minute for minute, _ in counts} | {minute_of(now_s)}
            for (minute, name), n in counts.items():
                pipe.hincrby(keys.rollup(minute), name, n)
            if depths:
                pipe.hset(keys.rollup(minute_of(now_s)), mapping=depths)
            for minute in minutes:
                pipe.expire(keys.rollup(minute), KEEP_S)
            pipe.execute()

    def _depths(self) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for service, client in self.platform.service_clients().items():
            with client.pipeline(transaction=False) as pipe:
                for prio in PRIORITY_ORDER:
                    pipe.llen(queue_name(service, prio))
                for prio, n in zip(PRIORITY_ORDER, pipe.execute(), strict=True):
                    out[f"{service}|{prio.value}|depth"] = int(n)
        return out


@dataclass
class Series:
    """The last hour per minute: ``minutes`` (epoch s of each minute's start) and, per chart, one list of
    values per service (``None`` where nothing was recorded)."""

    minutes: list[int]
    charts: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)
    recorded: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"minutes": self.minutes, "charts": self.charts, "recorded": self.recorded}


def read_series(platform: Platform, *, priority: str | None = None, now_s: float | None = None,
                minutes: int = 60) -> Series:
    """The rollup of the last ``minutes`` minutes per service (summed over priorities unless ``priority``):
    ``depth``, ``started``/``succeeded``/``failed`` per second, ``wait_p50``/``wait_p99`` in seconds."""
    now_s = time.time() if now_s is None else now_s
    last = minute_of(now_s)
    span = list(range(last - minutes + 1, last + 1))
    # The counts are written on the Redis where each service's tasks are recorded, the depths on the platform's.
    rows: list[dict[Any, Any]] = [{} for _ in span]
    for client in _clients(platform):
        with client.pipeline(transaction=False) as pipe:
            for minute in span:
                pipe.hgetall(platform.keys.rollup(minute))
            for row, raw in zip(rows, pipe.execute(), strict=True):
                for key, value in raw.items():
                    row[key] = row.get(key, 0) + int(value)
    names = ("depth", *RATES, "wait_p50", "wait_p99")
    series = Series(minutes=[m * 60 for m in span],
                    charts={name: {svc: [None] * len(span) for svc in platform.service_clients()} for name in names})
    for index, raw in enumerate(rows):
        if not raw:
            continue
        series.recorded = True
        waits: defaultdict[str, dict[int, int]] = defaultdict(dict)
        sums: defaultdict[tuple[str, str], int] = defaultdict(int)
        for key, value in raw.items():
            parts = (key.decode() if isinstance(key, bytes) else str(key)).split("|")
            if len(parts) != 3:
                continue
            service, prio, name = parts
            if prio == "wait":
                waits[service][int(name)] = int(value)
            elif priority is None or prio == priority:
                sums[(service, name)] += int(value)
        for (service, name), total in sums.items():
            if service in series.charts["depth"] and name in names:
                # The current minute is not over: its rate is over the seconds it has had so far.
                seconds = 60.0 if index < len(span) - 1 else max(1.0, now_s - span[index] * 60)
                series.charts[name][service][index] = total if name == "depth" else round(total / seconds, 3)
        for service, buckets in waits.items():
            if service in series.charts["depth"]:
                series.charts["wait_p50"][service][index] = quantile_s(buckets, 0.50)
                series.charts["wait_p99"][service][index] = quantile_s(buckets, 0.99)
    return series


# --- the per-type view: `top` ---------------------------------------------------------------------------------
@dataclass
class TypeFigures:
    """One task type over one window: counts per status and the two duration histograms (bucket -> count)."""

    counts: dict[str, int] = field(default_factory=dict)
    wait: dict[int, int] = field(default_factory=dict)
    run: dict[int, int] = field(default_factory=dict)

    def add(self, metric: str, value: int) -> None:
        """Add a ``<STATUS>|<bucket>`` field of a slot."""
        status, _, bucket = metric.partition("|")
        self.counts[status] = self.counts.get(status, 0) + value
        if bucket in ("", "-"):
            return
        histogram = self.wait if status == "STARTED" else self.run
        histogram[int(bucket)] = histogram.get(int(bucket), 0) + value

    def to_dict(self, span_s: float) -> dict[str, Any]:
        started = self.counts.get("STARTED", 0)
        return {
            "started": started,
            "started_per_s": round(started / span_s, 6) if span_s > 0 else 0.0,
            "succeeded": self.counts.get("SUCCEEDED", 0),
            "failed": self.counts.get("FAILED", 0),
            "retries": self.counts.get("RETRYING", 0),
            "dead_lettered": self.counts.get("DEAD_LETTERED", 0) + self.counts.get("TIMED_OUT", 0),
            "timed_out": self.counts.get("TIMED_OUT", 0),
            "cancelled": self.counts.get("CANCELLED", 0),
            "wait_p50_s": percentile(self.wait, 0.50),
            "wait_p99_s": percentile(self.wait, 0.99),
            "run_p50_s": percentile(self.run, 0.50),
            "run_p99_s": percentile(self.run, 0.99),
        }


def percentile(histogram: dict[int, int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a bucket histogram, as its bucket's middle (s); ``None`` when empty."""
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return round(bucket_seconds(bucket), 6)
    return None  # unreachable: rank <= total


@dataclass
class Window:
    """The figures of one window: ``span_s``, the seconds its slots cover (from the oldest slot's start to now, at
    least the window), and task type -> figures."""

    span_s: float
    types: dict[str, TypeFigures]

    def to_dict(self) -> dict[str, Any]:
        return {name: figures.to_dict(self.span_s) for name, figures in sorted(self.types.items())}


class RollupReader:
    """Reads and merges the slots of one or more Redis servers. A slot more than two slots old no longer changes
    and is kept from one read to the next, so a refreshing ``top`` reads only the three newest slots again."""

    def __init__(self, keys: Keys, clients: list[redis.Redis]) -> None:
        self.keys = keys
        self.clients = clients
        self._settled: dict[tuple[int, int], dict[str, dict[str, int]]] = {}

    def _fetch(self, client: redis.Redis, slots: list[int]) -> dict[int, dict[str, dict[str, int]]]:
        """Slot -> task type -> fields, two round trips: the slots' type indexes, then each type's hash."""
        with client.pipeline(transaction=False) as pipe:
            for s in slots:
                pipe.hkeys(self.keys.top_slot(s))
            indexes = pipe.execute()
        wanted = [(s, _text(t)) for s, types in zip(slots, indexes, strict=True) for t in types]
        with client.pipeline(transaction=False) as pipe:
            for s, task_type in wanted:
                pipe.hgetall(self.keys.top_type(s, task_type))
            replies = pipe.execute()
        out: dict[int, dict[str, dict[str, int]]] = {s: {} for s in slots}
        for (s, task_type), raw in zip(wanted, replies, strict=True):
            out[s][task_type] = {_text(k): int(v) for k, v in raw.items()}
        return out

    def read(self, now_s: float, windows_s: tuple[int, ...] = (60, 3_600)) -> dict[int, Window]:
        """Per window (s): the slots that overlap the last ``window`` seconds, merged per task type."""
        newest = slot_of(now_s)
        first = slot_of(now_s - max(windows_s))
        slots = list(range(first, newest + SLOT_S, SLOT_S))
        per_slot: dict[int, list[dict[str, dict[str, int]]]] = {s: [] for s in slots}
        for index, client in enumerate(self.clients):
            fresh = self._fetch(client, [s for s in slots if (index, s) not in self._settled])
            for s in slots:
                types = fresh[s] if s in fresh else self._settled[(index, s)]
                if s < newest - 2 * SLOT_S:
                    self._settled[(index, s)] = types
                per_slot[s].append(types)
        self._settled = {k: v for k, v in self._settled.items() if k[1] >= first}
        out: dict[int, Window] = {}
        for window in windows_s:
            start = slot_of(now_s - window)
            figures: dict[str, TypeFigures] = {}
            for s in slots:
                if s < start:
                    continue
                for types in per_slot[s]:
                    for task_type, fields in types.items():
                        merged = figures.setdefault(task_type, TypeFigures())
                        for metric, value in fields.items():
                            merged.add(metric, value)
            out[window] = Window(max(now_s - start, float(window)), figures)
        return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


#: The windows of ``top``: name -> seconds.
WINDOWS = {"minute": 60, "hour": 3_600}


def _clients(platform: Platform) -> list[redis.Redis]:
    """One client per Redis server the platform uses: the global one (the charts' depths) and each service's."""
    clients = {platform.settings.broker_url(): platform.redis()}
    for svc, url in platform.redis_urls().items():
        clients.setdefault(url, platform.redis(svc))
    return list(clients.values())


def reader_for(platform: Platform) -> RollupReader:
    """A reader of every Redis server the platform's services use."""
    return RollupReader(platform.keys, _clients(platform))


def top_report(platform: Platform, *, reader: RollupReader | None = None, now_s: float | None = None) -> dict[str, Any]:
    """What ``top --json`` prints: ``{"time", "slot_s", "minute": {"span_s", "types": {type: figures}}, "hour":
    {...}}``. Pass the same ``reader`` to refresh cheaply."""
    now_s = time.time() if now_s is None else now_s
    windows = (reader or reader_for(platform)).read(now_s, tuple(WINDOWS.values()))
    out: dict[str, Any] = {"time": round(now_s, 3), "slot_s": SLOT_S}
    for name, seconds in WINDOWS.items():
        window = windows[seconds]
        out[name] = {"span_s": round(window.span_s, 3), "types": window.to_dict()}
    return out
