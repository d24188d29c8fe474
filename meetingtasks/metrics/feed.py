"""A subscription to the status channel of one Redis server that survives Redis restarts."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import redis

from meetingtasks.core.loop import BackgroundThread
from meetingtasks.core.message import loads

log = logging.getLogger(__name__)


class StatusFeed:
    """Calls ``on_event`` with every JSON event published on ``channel``; reconnects with a pause.

    ``start()`` returns at once; :meth:`wait_subscribed` blocks until the subscription is live, so a
    caller can be sure no later event is missed. Logs one line per lost and per regained connection.
    """

    def __init__(
        self,
        name: str,
        client: redis.Redis,
        channel: str,
        on_event: Callable[[dict[str, Any]], None],
        *,
        retry_s: float = 1.0,
    ) -> None:
        self.name = name
        self.client = client
        self.channel = channel
        self.on_event = on_event
        self.retry_s = retry_s
        self.connected = False
        self._subscribed = threading.Event()
        self._tried = threading.Event()  # set after the first attempt, whatever its outcome
        self._runner = BackgroundThread(f"status-feed-{self.name}", self._run)
        self._stop = self._runner.stopping

    def start(self) -> None:
        self._runner.start()

    def stop(self) -> None:
        self._runner.stop()

    def wait_subscribed(self, timeout_s: float) -> bool:
        """Wait for the first subscription attempt; True if the feed is subscribed."""
        self._tried.wait(timeout_s)
        return self._subscribed.is_set()

    def _run(self) -> None:
        lost = False
        while not self._stop.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call, unused-ignore]
            try:
                pubsub.subscribe(self.channel)
                self.connected = True
                self._subscribed.set()
                self._tried.set()
                if lost:
                    log.info("status feed %s: reconnected", self.name)
                lost = False
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None:
                        self._deliver(message.get("data"))
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                if not lost:
                    log.warning("status feed %s: lost Redis (%s); retrying every %.1fs", self.name, exc, self.retry_s)
                lost = True
                self.connected = False
                self._tried.set()
                self._stop.wait(self.retry_s)
            finally:
                self.connected = False
                with contextlib.suppress(Exception):  # closing a broken connection may raise
                    pubsub.close()

    def _deliver(self, data: Any) -> None:
        try:
            event = loads(data)
        except ValueError:
            return  # not ours: another publisher on the channel
        if isinstance(event, dict):
            try:
                self.on_event(event)
            except Exception:
                log.exception("status feed %s: could not count event %r", self.name, event)
