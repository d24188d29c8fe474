"""Live subscribers: in-process listeners of Redis pub/sub channels that survive lost connections.

Generic over channel names: the event channels, the status channel ``mt:status``
(``platform.keys.status_channel``), or anything else; glob patterns too. Two flavours:

- :class:`LiveSubscriber` runs on a daemon thread and calls ``callback(message)`` for every message::

      sub = LiveSubscriber(platform, ["meeting_events"], callback=lambda m: print(m.event())).start()
      ...
      sub.stop()

- :class:`AsyncLiveSubscriber` is an async iterator for asyncio code (the WebSocket gateway)::

      async with AsyncLiveSubscriber(platform, [platform.keys.status_channel]) as sub:
          async for message in sub:
              status = message.json()

Both reconnect with capped backoff and resubscribe to every channel by themselves after the connection
drops or Redis restarts, logging one line when the link is lost and one when it is back. Pub/sub keeps
no history: messages published while the link is down are not delivered (use the streams for that; the
bridge does). ``on_reconnect`` is called after each recovery so that a caller can re-read state it may
have missed (e.g. the status records of the tasks it follows).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from meetingtasks.core.loop import BackgroundThread
from meetingtasks.events.envelope import Event, parse_foreign
from meetingtasks.events.reconnect import Reconnect, link_client
from meetingtasks.store.connections import new_async_client
from meetingtasks.store.platform import Platform

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LiveMessage:
    """One pub/sub message. ``pattern`` is set when it matched a pattern subscription."""

    channel: str
    data: bytes
    pattern: str | None = None

    def json(self) -> Any:
        return orjson.loads(self.data)

    def event(self) -> Event:
        """The message as an :class:`Event` (missing id/source/time filled as the bridge fills them)."""
        return parse_foreign(self.data, self.channel)


def _message(raw: dict[str, Any]) -> LiveMessage | None:
    if raw.get("type") not in ("message", "pmessage"):
        return None
    data = raw["data"]
    pattern = raw.get("pattern")
    return LiveMessage(
        channel=_text(raw["channel"]),
        data=data if isinstance(data, bytes) else str(data).encode(),
        pattern=_text(pattern) if pattern is not None else None,
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class LiveSubscriber:
    """Calls ``callback`` on its own thread for every message on ``channels`` / ``patterns``.

    A callback that raises is logged and counted in ``failed``; the subscriber goes on. ``subscribe()`` and
    ``unsubscribe()`` change the channels while running (applied within ``poll_s``).
    """

    def __init__(
        self,
        platform: Platform,
        channels: Iterable[str] = (),
        *,
        callback: Callable[[LiveMessage], object],
        patterns: Iterable[str] = (),
        on_reconnect: Callable[[], object] | None = None,
        name: str = "live subscriber",
        poll_s: float = 0.2,
    ) -> None:
        self.platform = platform
        self.callback = callback
        self.on_reconnect = on_reconnect
        self.name = name
        self.poll_s = poll_s
        self.received = 0
        self.failed = 0
        self._channels = set(channels)
        self._patterns = set(patterns)
        self._changed = threading.Event()
        self._lock = threading.Lock()
        self._runner = BackgroundThread(name, self._run, join_timeout_s=10)
        self._stop = self._runner.stopping
        self._ready = threading.Event()
        self._link = Reconnect(name, platform.settings.reconnect_backoff_max_s)

    @property
    def reconnects(self) -> int:
        return self._link.reconnects

    def start(self) -> LiveSubscriber:
        self._runner.start()
        return self

    def wait_ready(self, timeout_s: float = 10.0) -> bool:
        """Block until Redis confirmed every subscription (again, after a reconnect)."""
        return self._ready.wait(timeout_s)

    def stop(self) -> None:
        self._runner.stop()
        self._ready.clear()

    def subscribe(self, *channels: str) -> None:
        with self._lock:
            self._channels.update(channels)
        self._changed.set()

    def unsubscribe(self, *channels: str) -> None:
        with self._lock:
            self._channels.difference_update(channels)
        self._changed.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            client = link_client(self.platform.settings.broker_url(), self.platform.settings)
            pubsub = client.pubsub()  # type: ignore[no-untyped-call, unused-ignore]
            try:
                self._listen(pubsub)
            except (redis.RedisError, OSError) as exc:
                self._ready.clear()
                self._stop.wait(self._link.failed(exc))
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()
                client.close()

    def _listen(self, pubsub: redis.client.PubSub) -> None:
        active: tuple[set[str], set[str]] = (set(), set())  # channels, patterns on this connection
        expected = self._apply(pubsub, active)
        confirmed = 0
        while not self._stop.is_set():
            if self._changed.is_set():
                expected += self._apply(pubsub, active)
            raw = pubsub.get_message(timeout=self.poll_s)
            if raw is None:
                if expected == 0 and not self._ready.is_set():
                    self._connected()
                continue
            if raw["type"] in ("subscribe", "psubscribe"):
                confirmed += 1
                if confirmed >= expected and not self._ready.is_set():
                    self._connected()
                continue
            message = _message(raw)
            if message is None:
                continue
            self.received += 1
            try:
                self.callback(message)
            except Exception:
                self.failed += 1
                log.exception("%s: callback failed on a message of %s", self.name, message.channel)

    def _apply(self, pubsub: redis.client.PubSub, active: tuple[set[str], set[str]]) -> int:
        """Bring the connection's subscriptions in line with the wanted ones; returns how many were added."""
        self._changed.clear()
        with self._lock:
            channels, patterns = set(self._channels), set(self._patterns)
        active_channels, active_patterns = active
        if channels - active_channels:
            pubsub.subscribe(*(channels - active_channels))
        if active_channels - channels:
            pubsub.unsubscribe(*(active_channels - channels))  # type: ignore[no-untyped-call]
        if patterns - active_patterns:
            pubsub.psubscribe(*(patterns - active_patterns))
        added = len(channels - active_channels) + len(patterns - active_patterns)
        active_channels.clear()
        active_channels.update(channels)
        active_patterns.update(patterns)
        return added

    def _connected(self) -> None:
        recovered = self._link.failures > 0
        self._link.connected()
        self._ready.set()
        if recovered and self.on_reconnect is not None:
            try:
                self.on_reconnect()
            except Exception:
                log.exception("%s: on_reconnect failed", self.name)


class AsyncLiveSubscriber:
    """Async iterator over the messages of ``channels`` / ``patterns``; reconnects by itself.

    Messages wait in a buffer of ``buffer`` messages; when the consumer falls that far behind, the oldest
    are dropped and counted in ``dropped``, so a slow consumer never stalls the connection.
    """

    def __init__(
        self,
        platform: Platform,
        channels: Iterable[str] = (),
        *,
        patterns: Iterable[str] = (),
        on_reconnect: Callable[[], object] | None = None,
        name: str = "live subscriber",
        buffer: int = 10_000,
        poll_s: float = 0.2,
    ) -> None:
        self.platform = platform
        self.channels = list(channels)
        self.patterns = list(patterns)
        if not self.channels and not self.patterns:
            raise ValueError("AsyncLiveSubscriber needs at least one channel or pattern")
        self.on_reconnect = on_reconnect
        self.name = name
        self.poll_s = poll_s
        self.received = 0
        self.dropped = 0
        self._queue: asyncio.Queue[LiveMessage] = asyncio.Queue(maxsize=buffer)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._link = Reconnect(name, platform.settings.reconnect_backoff_max_s)

    @property
    def reconnects(self) -> int:
        return self._link.reconnects

    async def start(self) -> AsyncLiveSubscriber:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)
        return self

    async def wait_ready(self, timeout_s: float = 10.0) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._ready.clear()

    async def __aenter__(self) -> AsyncLiveSubscriber:
        await self.start()
        await self.wait_ready()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __aiter__(self) -> AsyncLiveSubscriber:
        return self

    async def __anext__(self) -> LiveMessage:
        if self._task is None and self._queue.empty():
            raise StopAsyncIteration
        return await self._queue.get()

    async def get(self, timeout_s: float | None = None) -> LiveMessage | None:
        """The next message, or ``None`` after ``timeout_s``."""
        try:
            return await asyncio.wait_for(self._queue.get(), timeout_s)
        except TimeoutError:
            return None

    def _client(self) -> aioredis.Redis:
        settings = self.platform.settings
        client: aioredis.Redis = new_async_client(settings.broker_url(), settings, retry=AsyncRetry(NoBackoff(), 0))
        return client

    async def _run(self) -> None:
        while True:
            client = self._client()
            pubsub = client.pubsub()
            try:
                await self._listen(pubsub)
            except (redis.RedisError, OSError) as exc:
                self._ready.clear()
                await asyncio.sleep(self._link.failed(exc))
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def _listen(self, pubsub: Any) -> None:
        expected = len(self.channels) + len(self.patterns)
        if self.channels:
            await pubsub.subscribe(*self.channels)
        if self.patterns:
            await pubsub.psubscribe(*self.patterns)
        confirmed = 0
        while True:
            raw = await pubsub.get_message(timeout=self.poll_s)
            if raw is None:
                continue
            if raw["type"] in ("subscribe", "psubscribe"):
                confirmed += 1
                if confirmed == expected:
                    self._connected()
                continue
            message = _message(raw)
            if message is None:
                continue
            self.received += 1
            if self._queue.full():
                self._queue.get_nowait()
                self.dropped += 1
            self._queue.put_nowait(message)

    def _connected(self) -> None:
        recovered = self._link.failures > 0
        self._link.connected()
        self._ready.set()
        if recovered and self.on_reconnect is not None:
            try:
                self.on_reconnect()
            except Exception:
                log.exception("%s: on_reconnect failed", self.name)
