"""Per-type rollups of task outcomes over the last hour, written where outcomes are recorded; read by ``top``.

Every accepted status transition of a run (STARTED, RETRYING and the terminal ones) is counted in the same Lua
call that records it (lua/fetch.lua, lua/transition.lua and the moves, through the ``rollup`` prelude part),
per task type and :data:`SLOT_S`-second slot, kept :data:`RETENTION_S`:

* ``P top:<slot start s>``: hash, task type -> 1, the types counted in the slot (the reader's index);
* ``P top:<slot start s>:<type>``: hash, ``<STATUS>|<bucket>`` -> transitions to that status whose duration fell
  in that bucket: the queue wait (``wait_s``) of a STARTED, the run time (``run_s``) of any other; bucket ``-``
  when the transition carried none. One field per transition: a status's count is the sum over its buckets.

A script accumulates its counts in a Lua table and writes them at its end (``mt_rollup_flush``): per type, one
``HSETNX`` of the index and one ``HINCRBY`` per distinct status and bucket, and the two ``EXPIRE`` only when the
type is new in the slot. A fetch that starts and finishes a batch of one type's tasks so writes a few commands for
all of them; a fetch of one task, three. Durations go into log-scale buckets, :data:`BUCKETS_PER_DOUBLING` per
doubling of microseconds (each ~19 % wide), so a percentile read from them is within ~9 % of the true value; the
rule lives here once and the Lua's constants are generated from it (:func:`lua_definitions`; the functions are
lua/prelude/rollup.lua). A hash per type and slot stays in Redis' compact encoding:
an hour of 30 types busy all the time, each with waits and runs spread from 1 ms to 2 s, takes about 7 MB
(docs/tools.md).

The keys are derived in Lua from the status channel (``<prefix>status`` -> ``<prefix>top:<slot>``), which every
recording script already receives: the same names as :meth:`meetingtasks.keys.Keys.top_slot` and
:meth:`~meetingtasks.keys.Keys.top_type`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from meetingtasks.keys import Keys

if TYPE_CHECKING:
    from meetingtasks.platform import Platform

#: Width of one rollup slot (s): the "last minute" is the last 60 to 70 s.
SLOT_S = 10
#: How long a slot is kept (s): an hour and a margin for a slow reader.
RETENTION_S = 3_600 + 2 * SLOT_S
#: Log-scale histogram resolution: buckets per doubling of a duration in microseconds. Four keep a type's slot
#: under Redis' compact-hash limit (128 fields) for waits and runs spread over a thousandfold range.
BUCKETS_PER_DOUBLING = 4
#: Statuses counted per type.
COUNTED = ("STARTED", "SUCCEEDED", "FAILED", "RETRYING", "DEAD_LETTERED", "TIMED_OUT", "CANCELLED")


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


#: A busy worker writes the counts of its fetches at most this long after they happened (s): until then they ride
#: back and forth with the fetches it sends anyway (see :class:`PendingCounts`).
WRITE_INTERVAL_S = 1.0


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


def lua_definitions() -> str:
    """The generated head of the ``rollup`` Lua prelude part (lua/prelude/rollup.lua has its functions): the slot,
    retention, bucket rule's constants and the counted statuses, so that the Lua counts what this module reads."""
    counted = ", ".join(f"{name}=true" for name in COUNTED)
    return (f"local MT_ROLLUP_SLOT_S = {SLOT_S}\n"
            f"local MT_ROLLUP_RETENTION_S = {RETENTION_S}\n"
            f"local MT_ROLLUP_BUCKETS_PER_DOUBLING = {BUCKETS_PER_DOUBLING}\n"
            f"local MT_ROLLUP_COUNTED = {{{counted}}}\n")


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


def reader_for(platform: Platform) -> RollupReader:
    """A reader of every Redis server the platform's services use."""
    clients = {url: platform.redis(svc) for svc, url in platform.redis_urls().items()}
    return RollupReader(platform.keys, list(clients.values()))


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
