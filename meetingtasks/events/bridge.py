"""The bridge: turns events into tasks, durably and exactly once per (event, subscription).

Two threads, each with its own Redis connections:

- **streams** (this module): reads every channel's stream with the consumer group ``Keys.bridge_group``
  (bridges share the work; each event goes to one of them) and hands each batch to the
  :class:`~meetingtasks.events.triggers.TriggerWriter`, which queues the triggered tasks exactly once and
  acknowledges the events only after that. Every ``bridge_claim_interval_s`` it re-claims (XAUTOCLAIM)
  events left unacknowledged for ``bridge_claim_idle_s``: those of a dead bridge and those whose
  subscription failed and is due again.
- **pub/sub** (:mod:`meetingtasks.events.intake`): appends what outside services ``PUBLISH`` to the
  streams, so that it takes the same path.

Lost connections and Redis restarts are retried with capped backoff and one log line when the link is lost
and one when it is back (:mod:`meetingtasks.events.reconnect`); a bug in one batch is logged and the loop
goes on, so the bridge never ends in a crash loop.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import redis

from meetingtasks.core.loop import BackgroundThread
from meetingtasks.events.channels import CHANNELS
from meetingtasks.events.intake import PubSubIntake
from meetingtasks.events.reconnect import LinkClients, Reconnect
from meetingtasks.events.subscriptions import load_subscriptions
from meetingtasks.events.triggers import BridgeStats, Row, TriggerWriter
from meetingtasks.store.platform import Platform

log = logging.getLogger(__name__)

#: A consumer with nothing pending and idle this long belonged to a bridge that is gone; it is deleted.
STALE_CONSUMER_IDLE_S = 3600.0
#: Pause after a batch smaller than ``bridge_batch``, so that the next read takes several events at once.
GATHER_S = 0.002


class Bridge:
    """``start()`` runs the bridge on two daemon threads; ``stop()`` ends them (safe to call twice)."""

    def __init__(self, platform: Platform, *, includes: Iterable[str] = (), consumer: str | None = None) -> None:
        self.platform = platform
        self.settings = platform.settings
        self.keys = platform.keys
        self.group = self.keys.bridge_group
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # Subscriptions first: the include modules may declare channels of their own.
        self.subscriptions = load_subscriptions([*self.settings.include, *includes])
        self.streams = {self.keys.event_stream(channel): channel for channel in CHANNELS}
        self.stats = BridgeStats()
        self.writer = TriggerWriter(platform, self.stats)
        self.intake = PubSubIntake(platform, self.writer, on_ready=self._mark_ready)
        self.link = Reconnect("bridge streams", self.settings.reconnect_backoff_max_s)
        self.ready = threading.Event()
        self._streams_ready = threading.Event()
        self._ready_lock = threading.Lock()
        self._runner = BackgroundThread("bridge-streams", self._consume_forever, join_timeout_s=10)
        self._stop = self._runner.stopping

    # --- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> Bridge:
        if self._runner.start():
            self.intake.start()
        return self

    def _mark_ready(self) -> None:
        """Called by both threads once connected; the second one declares the bridge ready."""
        with self._ready_lock:
            if self._streams_ready.is_set() and self.intake.ready.is_set() and not self.ready.is_set():
                self.ready.set()
                log.info("bridge ready: consumer %s, %d subscriptions on %d channels", self.consumer,
                         len(self.subscriptions), len(CHANNELS))

    def wait_ready(self, timeout_s: float = 10.0) -> bool:
        return self.ready.wait(timeout_s)

    @property
    def reconnects(self) -> int:
        return self.link.reconnects + self.intake.link.reconnects

    def stop(self) -> None:
        self._runner.stop()
        self.intake.stop()
        self.ready.clear()
        self._streams_ready.clear()

    # --- streams ------------------------------------------------------------------------------------------------
    def _consume_forever(self) -> None:
        link = self.link
        carry: list[Row] = []  # read but not finished: retried first
        while not self._stop.is_set():
            clients = LinkClients(self.settings)
            try:
                client = clients.url(self.settings.broker_url())
                self._ensure_groups(client)
                link.connected()
                self._streams_ready.set()
                self._mark_ready()
                next_claim = 0.0
                while not self._stop.is_set():
                    if carry:
                        partial = len(carry) < self.settings.bridge_batch
                        self.writer.handle(clients, carry)
                        carry = []
                        if partial:
                            # Let a few ms of events gather: one commit for several events costs far less
                            # CPU than one commit each, for that much latency.
                            self._stop.wait(GATHER_S)
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

    def _read(self, client: redis.Redis) -> list[Row]:
        reply: Any = client.xreadgroup(
            self.group, self.consumer, dict.fromkeys(self.streams, ">"),
            count=self.settings.bridge_batch, block=int(self.settings.bridge_block_s * 1000),
        )
        return [(_text(stream), _text(entry_id), fields)
                for stream, entries in (reply or []) for entry_id, fields in entries]

    def _claim(self, clients: LinkClients, client: redis.Redis) -> None:
        """Take over events idle for ``bridge_claim_idle_s`` (a dead bridge's, or due for another attempt)."""
        min_idle_ms = int(self.settings.bridge_claim_idle_s * 1000)
        for stream in self.streams:
            cursor = "0-0"
            while not self._stop.is_set():
                reply = client.xautoclaim(
                    stream, self.group, self.consumer, min_idle_ms, cursor, count=self.settings.bridge_batch
                )
                next_cursor, claimed = reply[:2]
                if len(reply) > 2 and reply[2]:
                    # Redis 7 drops entries deleted before anyone handled them from the group by itself and
                    # names them here: say so, as the Redis 6.2 path below does.
                    log.warning("bridge: %d events of %s were deleted from the stream before being handled",
                                len(reply[2]), stream)
                entries = [(stream, _text(eid), fields) for eid, fields in claimed if eid is not None]
                if len(entries) < len(claimed):
                    self._ack_deleted(client, stream, cursor, _text(next_cursor), {e[1] for e in entries})
                if entries:
                    log.info("bridge: claimed %d pending events of %s", len(entries), stream)
                    self.writer.handle(clients, entries)
                cursor = _text(next_cursor)
                if cursor == "0-0":
                    break
        self._drop_stale_consumers(client)

    def _ack_deleted(self, client: redis.Redis, stream: str, start: str, end: str, present: set[str]) -> None:
        # Redis 6.2's XAUTOCLAIM returns nil for entries deleted before anyone handled them (XDEL, or a trim
        # by another tool: ours never removes a pending entry) and keeps them pending forever; find their
        # ids and acknowledge them (Redis 7 does this by itself).
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
            log.warning("bridge: %d events of %s were deleted from the stream before being handled",
                        len(gone), stream)

    def _drop_stale_consumers(self, client: redis.Redis) -> None:
        stale_ms = max(STALE_CONSUMER_IDLE_S, self.settings.bridge_claim_idle_s * 10) * 1000
        for stream in self.streams:
            for info in client.xinfo_consumers(stream, self.group):
                name = _text(info["name"])
                if info["pending"] == 0 and info["idle"] > stale_ms and name != self.consumer:
                    client.xgroup_delconsumer(stream, self.group, name)



def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
