"""Per-type rollups of task outcomes over the last hour, written where outcomes are recorded; read by ``top``.

Every accepted status transition of a run (STARTED, RETRYING and the terminal ones) is counted in the same Lua
call that records it (the worker's fetch script and the one-task transition script of :mod:`meetingtasks.status`),
into one hash per :data:`SLOT_S`-second slot, ``P top:<slot start s>``, kept :data:`RETENTION_S`:

* ``<type>|<STATUS>``: how many transitions to that status;
* ``<type>|wait|<bucket>``: queue waits (``wait_s`` of a STARTED) per log-scale bucket;
* ``<type>|run|<bucket>``: run times (``run_s`` of an outcome) per bucket.

A script accumulates its counts in a Lua table and writes them at its end (``mt_rollup_flush``): a fetch that
starts and finishes a batch of one type's tasks writes one ``HINCRBY`` per distinct field and one ``EXPIRE``
per slot, not per task. Buckets are :data:`BUCKETS_PER_DOUBLING` per doubling of microseconds (each ~9 % wide),
so a percentile read from them is within ~5 % of the true value; the rule lives here once and the Lua is
generated from it. Memory: one field per type, status and occupied bucket, per slot; 360 slots.

The hash key is derived in Lua from the status channel (``<prefix>status`` -> ``<prefix>top:<slot>``), which
every recording script already receives: the same key as :meth:`meetingtasks.keys.Keys.top_slot`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import redis

from meetingtasks.keys import Keys

#: Width of one rollup slot (s): the "last minute" is the last 60 to 70 s.
SLOT_S = 10
#: How long a slot is kept (s): an hour and a margin for a slow reader.
RETENTION_S = 3_600 + 2 * SLOT_S
#: Log-scale histogram resolution: buckets per doubling of a duration in microseconds.
BUCKETS_PER_DOUBLING = 8
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


# Prelude of every script that records transitions: mt_rollup(channel, now, type, status, wait_s, run_s) counts
# one, mt_rollup_flush() writes what the script counted; call it before the script returns.
ROLLUP_LUA = f"""
local mt_racc = {{}}
local mt_counted = {{{", ".join(f"{name}=true" for name in COUNTED)}}}
local function mt_bucket(seconds)
  local micros = tonumber(seconds)
  if not micros then return nil end
  micros = micros * 1e6
  if micros < 1 then return 0 end
  return math.floor(math.log(micros) / math.log(2) * {BUCKETS_PER_DOUBLING}) + 1
end
local function mt_rollup(channel, now, ty, status, wait_s, run_s)
  if not ty or ty == '' or not mt_counted[status] then return end
  local slot = math.floor(tonumber(now) / {SLOT_S}) * {SLOT_S}
  local key = string.sub(channel, 1, -7) .. 'top:' .. slot
  local acc = mt_racc[key]
  if not acc then acc = {{}}; mt_racc[key] = acc end
  local name = ty .. '|' .. status
  acc[name] = (acc[name] or 0) + 1
  local b = wait_s and status == 'STARTED' and mt_bucket(wait_s)
  if b then name = ty .. '|wait|' .. b; acc[name] = (acc[name] or 0) + 1 end
  b = run_s and status ~= 'STARTED' and mt_bucket(run_s)
  if b then name = ty .. '|run|' .. b; acc[name] = (acc[name] or 0) + 1 end
end
local function mt_rollup_flush()
  for key, acc in pairs(mt_racc) do
    for name, n in pairs(acc) do redis.call('HINCRBY', key, name, n) end
    redis.call('EXPIRE', key, {RETENTION_S})
  end
  mt_racc = {{}}
end
"""


@dataclass
class TypeFigures:
    """One task type over one window: counts per status and the two duration histograms (bucket -> count)."""

    counts: dict[str, int] = field(default_factory=dict)
    wait: dict[int, int] = field(default_factory=dict)
    run: dict[int, int] = field(default_factory=dict)

    def add(self, metric: str, value: int) -> None:
        kind, _, bucket = metric.partition("|")
        if kind == "wait":
            self.wait[int(bucket)] = self.wait.get(int(bucket), 0) + value
        elif kind == "run":
            self.run[int(bucket)] = self.run.get(int(bucket), 0) + value
        else:
            self.counts[metric] = self.counts.get(metric, 0) + value

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
    and is kept from one read to the next, so a refreshing ``top`` reads three hashes per server and refresh."""

    def __init__(self, keys: Keys, clients: list[redis.Redis]) -> None:
        self.keys = keys
        self.clients = clients
        self._settled: dict[tuple[int, int], dict[str, int]] = {}

    def read(self, now_s: float, windows_s: tuple[int, ...] = (60, 3_600)) -> dict[int, Window]:
        """Per window (s): the slots that overlap the last ``window`` seconds, merged per task type."""
        newest = slot_of(now_s)
        first = slot_of(now_s - max(windows_s))
        slots = list(range(first, newest + SLOT_S, SLOT_S))
        per_slot: dict[int, list[dict[str, int]]] = {s: [] for s in slots}
        for index, client in enumerate(self.clients):
            wanted = [s for s in slots if (index, s) not in self._settled]
            with client.pipeline(transaction=False) as pipe:
                for s in wanted:
                    pipe.hgetall(self.keys.top_slot(s))
                fresh = {s: _decode(raw) for s, raw in zip(wanted, pipe.execute(), strict=True)}
            for s in slots:
                fields = fresh[s] if s in fresh else self._settled[(index, s)]
                if s < newest - 2 * SLOT_S:
                    self._settled[(index, s)] = fields
                per_slot[s].append(fields)
        self._settled = {k: v for k, v in self._settled.items() if k[1] >= first}
        out: dict[int, Window] = {}
        for window in windows_s:
            start = slot_of(now_s - window)
            types: dict[str, TypeFigures] = {}
            for s in slots:
                if s < start:
                    continue
                for fields in per_slot[s]:
                    for name, value in fields.items():
                        task_type, _, metric = name.partition("|")
                        types.setdefault(task_type, TypeFigures()).add(metric, value)
            out[window] = Window(max(now_s - start, float(window)), types)
        return out


def _decode(raw: dict[Any, Any]) -> dict[str, int]:
    return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}
