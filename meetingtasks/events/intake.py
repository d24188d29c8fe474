"""The pub/sub intake of the bridge: events outside services ``PUBLISH`` become stream events.

It listens on every declared channel and appends every event whose id is not in its stream yet (an event
without an id gets one derived from its bytes, the same in every bridge), so that it takes the durable,
de-duplicated path of the stream. Most of what it hears are the platform's own events, already in their
streams: it recognises them by id in one round trip per few milliseconds of messages. Messages published
while its connection is down are not heard: that is pub/sub; outside publishers that cannot lose an event
repeat it with its id, which makes the repetition harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis

from meetingtasks.core.errors import InvalidEvent
from meetingtasks.core.loop import BackgroundThread
from meetingtasks.events.channels import CHANNELS
from meetingtasks.events.envelope import Event, parse_foreign
from meetingtasks.events.publisher import EventPublisher
from meetingtasks.events.reconnect import LinkClients, Reconnect
from meetingtasks.events.triggers import TriggerWriter
from meetingtasks.store.platform import Platform

log = logging.getLogger(__name__)

#: How long the listener gathers messages before checking them in one round trip.
GATHER_S = 0.005


class PubSubIntake:
    """``start()`` listens on a daemon thread until ``stop()`` (safe twice); ``ready`` once subscribed."""

    def __init__(self, platform: Platform, writer: TriggerWriter, on_ready: Callable[[], None]) -> None:
        self.platform = platform
        self.settings = platform.settings
        self.keys = platform.keys
        self.writer = writer
        self.on_ready = on_ready
        self.publisher = EventPublisher(platform)
        self.channels = {self.keys.event_channel(c): c for c in CHANNELS}
        self.link = Reconnect("bridge pub/sub", self.settings.reconnect_backoff_max_s)
        self.ready = threading.Event()
        self._runner = BackgroundThread("bridge-pubsub", self._run, join_timeout_s=10)
        self._stop = self._runner.stopping

    def start(self) -> None:
        self._runner.start()

    def stop(self) -> None:
        self._runner.stop()
        self.ready.clear()

    def _run(self) -> None:
        link, channels = self.link, self.channels
        while not self._stop.is_set():
            clients = LinkClients(self.settings)
            pubsub = None
            try:
                client = clients.url(self.settings.broker_url())
                pubsub = client.pubsub()  # type: ignore[no-untyped-call, unused-ignore]
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
                            self.ready.set()
                            self.on_ready()
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
                    self._append_heard(clients, batch)
            except (redis.RedisError, OSError) as exc:
                self._stop.wait(link.failed(exc))
            except Exception:
                log.exception("bridge pub/sub: unexpected error; retrying")
                self._stop.wait(link.failed(RuntimeError("unexpected error")))
            finally:
                if pubsub is not None:
                    pubsub.close()
                clients.close()

    def _append_heard(self, clients: LinkClients, batch: list[dict[str, Any]]) -> None:
        """Append each heard event whose id is not in its stream yet.

        Most of what is heard are our own events, already in their streams: one pipeline of EXISTS on
        their ids recognises them without validating them again; the rest are parsed and appended (the
        append script checks the id once more, atomically, against a racing bridge)."""
        heard: list[tuple[str, bytes, str | None]] = []
        for message in batch:
            channel = self.channels.get(_text(message["channel"])) if message.get("type") == "message" else None
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
                self.writer.file_malformed(clients, channel, data, str(exc), "published on pub/sub")
                continue
            events.append(event)
        if not events:
            return
        with client.pipeline(transaction=False) as pipe:
            for event in events:
                self.publisher.queue(pipe, event, announce=False)
            appended = pipe.execute()
        self.writer.stats.appended += sum(1 for entry in appended if entry)


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
