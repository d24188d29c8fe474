"""The last hour of task traffic, per minute, in Redis: what the console draws its charts from.

Status events are published, not stored, and the exporter's Prometheus counters live in its memory; a laptop
running ``meetingtasks up`` has no Prometheus to keep their history. So the exporter, which hears every status
event already, also adds them up per minute: :class:`RollupRecorder` counts events in memory (one dict update
per event) and its flush loop writes the counts every :data:`FLUSH_INTERVAL_S` into ``P rollup:<minute>`` (one
hash per minute, epoch seconds // 60), with a sample of each queue's depth (``LLEN``). Each hash expires after
:data:`KEEP_S` (an hour plus a margin): the history is bounded by time, ~61 hashes whatever the traffic.

Fields (``<svc>|<priority>|<name>``): ``started``, ``succeeded``, ``failed`` (the states of the failed phase,
``status_schema.PHASES``: the runs that ended without a result), ``depth`` (queued, the last sample of the minute); and
``<svc>|wait|<i>``: STARTED events whose dispatch -> start wait (``wait_s``) fell in bucket ``i`` of
:data:`WAIT_BUCKETS_S`, from which :func:`read_series` derives p50 and p99.

Only one exporter writes (a lease in ``P rollup-writer``, renewed at each flush), so two exporters on one
platform do not count every event twice. Without a running exporter there is no history: the console then says
so and shows the current numbers only.
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
from typing import Any

import redis

from meetingtasks.core.loop import BackgroundThread
from meetingtasks.core.priority import PRIORITY_ORDER, queue_name
from meetingtasks.store.platform import Platform
from meetingtasks.store.status_schema import PHASES, Phase, Status

log = logging.getLogger(__name__)

#: How long a minute's hash is kept: the charts' hour plus a margin for the minute being written.
KEEP_S = 3_900
#: How often the recorder writes its counts and samples depths.
FLUSH_INTERVAL_S = 5.0
#: The writer lease outlives a few missed flushes, then another exporter takes over.
LEASE_S = 30
#: Upper bounds (s) of the dispatch -> start wait buckets; the last bucket is everything above.
WAIT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                  300.0, 1800.0)
#: Chart series: the counter fields, per second in the charts.
RATES = ("started", "succeeded", "failed")
#: The counter field a status event adds to: a start, or how a run ended by the status's phase (status_schema).
_COUNTER_OF = {Status.STARTED.value: "started",
               **{s.value: PHASES[s].value for s in Status if PHASES[s] in (Phase.SUCCEEDED, Phase.FAILED)}}


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


class RollupRecorder:
    """Counts status events per minute (``observe``, called by the exporter's status feeds) and writes them to
    Redis every ``interval_s``. ``start()``/``stop()``; ``stop()`` flushes what is left and is safe twice."""

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
        name = _COUNTER_OF.get(str(event.get("status")))
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
    client = platform.redis()
    with client.pipeline(transaction=False) as pipe:
        for minute in span:
            pipe.hgetall(platform.keys.rollup(minute))
        rows = pipe.execute()
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
