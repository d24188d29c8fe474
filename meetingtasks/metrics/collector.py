"""Metrics read from Redis at scrape time: queues, dead letters, worker liveness, bridge and gateway.

Each scrape costs one pipeline of ``LLEN`` plus two server-side counting scripts per service
(:func:`meetingtasks.store.stats.collect`) and one ``HGETALL`` of each service's heartbeats. When Redis does not
answer, the scrape still succeeds with ``meetingtasks_redis_up 0`` and without the Redis-derived families.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from meetingtasks.events.channels import CHANNELS
from meetingtasks.metrics.heartbeat import read_heartbeats
from meetingtasks.metrics.reporter import read_reports
from meetingtasks.store.platform import Platform
from meetingtasks.store.stats import collect

log = logging.getLogger(__name__)

Families = Iterator[GaugeMetricFamily | CounterMetricFamily]
#: Redis before 7.0 reports no consumer-group lag; it is counted with XRANGE up to this many entries.
LAG_COUNT_CAP = 10_000
#: Counter fields of a gateway's ``P gateway:<instance>`` hash -> help text (``meetingtasks_gateway_<field>``).
GATEWAY_COUNTERS = {
    "sessions_opened_total": "WebSocket sessions opened",
    "sessions_closed_total": "WebSocket sessions closed",
    "auth_refused_total": "Connections refused for a missing or bad token",
    "connections_refused_total": "Connections refused: the client holds gateway_max_connections_per_client",
    "submits_denied_total": "Submits refused: a type not open to clients, or a payload naming another user",
    "pushes_total": "Status frames pushed to clients",
    "frames_in_total": "Frames received from clients",
    "frames_out_total": "Frames sent to clients",
    "submits_total": "Tasks submitted by clients",
    "cancels_total": "Cancels requested by clients",
    "subscribes_total": "Subscriptions to task status by clients",
    "errors_sent_total": "Error frames sent to clients",
    "rate_limited_total": "Frames refused by the per-client rate limit",
    "inflight_refused_total": "Submits refused: too many unfinished tasks for the client",
    "oversize_frames_total": "Frames refused for their size",
    "idle_closed_total": "Sessions closed for being idle",
    "slow_closed_total": "Sessions closed because the client read too slowly",
}


class PlatformCollector(Collector):
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._failing = False

    def collect(self) -> Families:
        up = GaugeMetricFamily("meetingtasks_redis_up", "1 when the exporter could read Redis at this scrape")
        started = time.perf_counter()
        try:
            families = [*self._queues(), *self._workers(), *self._bridge(), *self._bridge_counters(),
                        *self._gateways()]
        except (redis.RedisError, OSError) as exc:
            if not self._failing:
                log.warning("exporter: cannot read Redis (%s); reporting meetingtasks_redis_up 0", exc)
            self._failing = True
            up.add_metric([], 0)
            yield up
            return
        if self._failing:
            log.info("exporter: Redis readable again")
        self._failing = False
        up.add_metric([], 1)
        yield up
        yield from families
        took = GaugeMetricFamily("meetingtasks_scrape_redis_seconds", "Time spent reading Redis for this scrape")
        took.add_metric([], time.perf_counter() - started)
        yield took

    def _queues(self) -> list[GaugeMetricFamily]:
        labels = ["service", "priority", "queue"]
        depth = GaugeMetricFamily("meetingtasks_queue_depth", "Tasks waiting in a queue", labels=labels)
        unacked = GaugeMetricFamily(
            "meetingtasks_queue_unacked", "Tasks delivered to a worker and not yet acknowledged", labels=labels
        )
        scheduled = GaugeMetricFamily(
            "meetingtasks_scheduled_tasks", "Tasks in the delayed set (delay, eta, retry backoff)", labels=labels
        )
        dead = GaugeMetricFamily("meetingtasks_dead_letters", "Dead letters held per service and priority",
                                 labels=labels)
        for row in collect(self.platform):
            queue = f"{row.service}.{row.priority}" if row.priority != "-" else ""
            values = [row.service, row.priority if row.priority != "-" else "unknown", queue]
            if row.priority != "-":
                depth.add_metric(values, row.queued)
                unacked.add_metric(values, row.unacked)
                scheduled.add_metric(values, row.scheduled)
            dead.add_metric(values, row.dead_lettered)
        return [depth, unacked, scheduled, dead]

    def _workers(self) -> list[GaugeMetricFamily | CounterMetricFamily]:
        labels = ["service", "worker"]
        up = GaugeMetricFamily("meetingtasks_worker_up",
                               "1 while the worker's consumer loop writes heartbeats, 0 once stale", labels=labels)
        age = GaugeMetricFamily("meetingtasks_worker_heartbeat_age_seconds", "Seconds since the last heartbeat",
                                labels=labels)
        active = GaugeMetricFamily("meetingtasks_worker_active_tasks", "Tasks the worker is running", labels=labels)
        processed = CounterMetricFamily(
            "meetingtasks_worker_tasks_processed", "Tasks the worker accepted since it started", labels=labels
        )
        alive = GaugeMetricFamily("meetingtasks_workers_alive", "Workers of a service with a fresh heartbeat",
                                  labels=["service"])
        now = time.time()
        for service in self.platform.services():
            beats = read_heartbeats(self.platform.redis(service), self.platform, service, now)
            for beat in beats:
                values = [service, beat.worker]
                up.add_metric(values, 1 if beat.alive(now) else 0)
                age.add_metric(values, beat.age_s(now))
                active.add_metric(values, beat.active)
                processed.add_metric(values, beat.processed)
            alive.add_metric([service], sum(1 for beat in beats if beat.alive(now)))
        return [up, age, active, processed, alive]

    def _bridge(self) -> list[GaugeMetricFamily]:
        """Per event stream: length, cap and over-cap flag, and of the bridge's consumer group: lag, pending,
        consumers."""
        labels = ["channel"]
        length = GaugeMetricFamily("meetingtasks_event_stream_length", "Events held in a channel's stream",
                                   labels=labels)
        lag = GaugeMetricFamily("meetingtasks_bridge_lag",
                                "Events in a stream not yet read by the bridge's consumer group", labels=labels)
        pending = GaugeMetricFamily("meetingtasks_bridge_pending",
                                    "Events read by a bridge and not yet acknowledged", labels=labels)
        consumers = GaugeMetricFamily("meetingtasks_bridge_consumers", "Bridge consumers in the group",
                                      labels=labels)
        cap = GaugeMetricFamily("meetingtasks_event_stream_cap", "Hard cap of a stream (stream_maxlen)",
                                labels=labels)
        over_cap = GaugeMetricFamily(
            "meetingtasks_event_stream_over_cap",
            "1 while a stream holds more events than its cap (kept whole: a consumer group is behind, or "
            "trimming is not running)", labels=labels)
        maxlen = self.platform.settings.stream_maxlen
        client = self.platform.redis()
        keys = self.platform.keys
        with client.pipeline(transaction=False) as pipe:
            for channel in CHANNELS:
                pipe.xlen(keys.event_stream(channel))
                pipe.xinfo_groups(keys.event_stream(channel))
            replies = pipe.execute(raise_on_error=False)
        for index, channel in enumerate(CHANNELS):
            size, groups = replies[2 * index], replies[2 * index + 1]
            length.add_metric([channel], size if isinstance(size, int) else 0)
            cap.add_metric([channel], maxlen)
            over_cap.add_metric([channel], int(isinstance(size, int) and size > maxlen))
            group = next((g for g in groups if _text(g.get("name")) == keys.bridge_group), None) \
                if isinstance(groups, list) else None
            if group is None:
                # No bridge has joined yet: everything in the stream is waiting for it.
                lag.add_metric([channel], size if isinstance(size, int) else 0)
                continue
            lag.add_metric([channel], self._lag(client, keys.event_stream(channel), group))
            pending.add_metric([channel], int(group.get("pending") or 0))
            consumers.add_metric([channel], int(group.get("consumers") or 0))
        return [length, lag, pending, consumers, cap, over_cap]

    def _bridge_counters(self) -> list[GaugeMetricFamily | CounterMetricFamily]:
        """What each bridge reported of itself (see :mod:`meetingtasks.metrics.reporter`)."""
        labels = ["bridge"]
        counters = {
            name: CounterMetricFamily(f"meetingtasks_bridge_{name}", text, labels=labels)
            for name, text in (
                ("events_processed", "Stream entries a bridge handled and acknowledged"),
                ("tasks_triggered", "Tasks a bridge queued for subscriptions"),
                ("duplicates", "Event/subscription pairs a bridge found already triggered"),
                ("subscription_failures", "Subscription runs that raised (retried later)"),
                ("dead_letters", "Events or triggers a bridge dead-lettered"),
                ("events_appended", "Events heard on pub/sub and appended to their stream"),
            )
        }
        fields = {"events_processed": "events", "tasks_triggered": "tasks", "duplicates": "duplicates",
                  "subscription_failures": "failures", "dead_letters": "dead_letters",
                  "events_appended": "appended"}
        up = GaugeMetricFamily("meetingtasks_bridge_up", "1 while a bridge reports, 0 once stale", labels=labels)
        alive = GaugeMetricFamily("meetingtasks_bridges_alive", "Bridges reporting recently")
        reports = read_reports(self.platform.redis(), self.platform.keys.bridges)
        for name, report in reports.items():
            for metric, field in fields.items():
                counters[metric].add_metric([name], float(report.get(field) or 0))
            up.add_metric([name], 1 if report["alive"] and report.get("ready", True) else 0)
        alive.add_metric([], sum(1 for r in reports.values() if r["alive"]))
        return [*counters.values(), up, alive]

    def _gateways(self) -> list[GaugeMetricFamily | CounterMetricFamily]:
        """Each gateway's session counters (``P gateway:<instance>``, found through the ``P gateways`` index)."""
        labels = ["gateway"]
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "sessions_open": GaugeMetricFamily("meetingtasks_gateway_sessions", "Open WebSocket sessions",
                                               labels=labels),
            "tasks_followed": GaugeMetricFamily("meetingtasks_gateway_tasks_followed",
                                                "Tasks whose status a gateway forwards to a client", labels=labels),
        }
        for name, text in GATEWAY_COUNTERS.items():
            families[name] = CounterMetricFamily(f"meetingtasks_gateway_{name}", text, labels=labels)
        alive = GaugeMetricFamily("meetingtasks_gateways_alive", "Gateways whose counters are fresh")
        gateways = read_gateways(self.platform)
        for instance, fields in gateways.items():
            for name, family in families.items():
                family.add_metric([instance], float(fields.get(name) or 0))
        alive.add_metric([], len(gateways))
        return [*families.values(), alive]

    @staticmethod
    def _lag(client: redis.Redis, stream: str, group: dict[str, object]) -> int:
        reported = group.get("lag")
        if isinstance(reported, int):
            return reported
        last = _text(group.get("last-delivered-id") or "0-0")
        return len(client.xrange(stream, min=f"({last}", max="+", count=LAG_COUNT_CAP) or [])


def read_gateways(platform: Platform) -> dict[str, dict[str, str]]:
    """Each live gateway's counters (``P gateway:<instance>``, found through the ``P gateways`` index); drops
    index members whose hash expired (the gateway stopped reporting)."""
    client = platform.redis()
    keys = platform.keys
    instances = [_text(i) for i in client.zrange(keys.gateways, 0, -1)]
    with client.pipeline(transaction=False) as pipe:
        for instance in instances:
            pipe.hgetall(keys.gateway(instance))
        rows = pipe.execute()
    live: dict[str, dict[str, str]] = {}
    gone = []
    for instance, row in zip(instances, rows, strict=True):
        if row:
            live[instance] = {_text(k): _text(v) for k, v in row.items()}
        else:
            gone.append(instance)
    if gone:
        client.zrem(keys.gateways, *gone)
    return live


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
