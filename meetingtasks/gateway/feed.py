"""The status feed: every transition published on the status channel, handed to the session manager.

One :class:`~meetingtasks.events.live.AsyncLiveSubscriber` per distinct Redis server of the platform (a
service may live on its own server); each reconnects by itself, and after a reconnect the manager re-reads
the tasks it follows, since pub/sub keeps nothing published while the link was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import orjson

from meetingtasks.events.live import AsyncLiveSubscriber
from meetingtasks.gateway.sessions import ClientTaskManager
from meetingtasks.store.platform import Platform

log = logging.getLogger(__name__)


class StatusFeed:
    def __init__(self, platform: Platform, manager: ClientTaskManager) -> None:
        self.platform = platform
        self.manager = manager
        self.subscribers: list[AsyncLiveSubscriber] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.bad_events = 0

    async def start(self) -> None:
        if self.subscribers:
            return
        channel = self.platform.keys.status_channel
        for url in sorted(set(self.platform.redis_urls().values())):
            # A platform whose default server is ``url``: the subscriber listens on the default server.
            platform = Platform(self.platform.settings.model_copy(update={"redis_url": url,
                                                                          "service_redis_urls": {}}))
            sub = AsyncLiveSubscriber(platform, [channel], on_reconnect=self._reconciler(),
                                      name="gateway status feed", buffer=100_000)
            await sub.start()
            self.subscribers.append(sub)
            self.tasks.append(asyncio.get_running_loop().create_task(self._pump(sub), name="gateway-status-feed"))

    def _reconciler(self) -> Callable[[], None]:
        def reconcile() -> None:
            asyncio.get_running_loop().create_task(self.manager.reconcile())

        return reconcile

    async def wait_ready(self, timeout_s: float = 10.0) -> bool:
        results = [await sub.wait_ready(timeout_s) for sub in self.subscribers]
        return all(results)

    async def is_connected(self) -> bool:
        return bool(self.subscribers) and await self.wait_ready(0.05)

    async def _pump(self, sub: AsyncLiveSubscriber) -> None:
        on_status = self.manager.on_status
        async for message in sub:
            try:
                event = orjson.loads(message.data)
                if isinstance(event, dict):
                    on_status(event)
            except Exception:
                self.bad_events += 1
                log.exception("status feed: could not route an event")

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in self.subscribers:
            await sub.stop()
        self.tasks, self.subscribers = [], []
