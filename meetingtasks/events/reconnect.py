"""Reconnecting to Redis: exponential backoff with a cap, one log line when the link is lost and one when
it is back. Shared by the bridge and the live subscribers; every client they make gives up at once on a
broken connection (no silent retries inside redis-py), so that this is the one place that waits."""

from __future__ import annotations

import logging
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from meetingtasks.core.settings import Settings
from meetingtasks.store.connections import new_client

log = logging.getLogger(__name__)

#: First wait after a lost connection; it doubles per failed attempt up to ``reconnect_backoff_max_s``.
FIRST_DELAY_S = 0.1


def reconnect_delay_s(failures: int, max_s: float, first_s: float = FIRST_DELAY_S) -> float:
    """Seconds to wait before attempt ``failures + 1``: 0.1, 0.2, 0.4 ... capped at ``max_s``."""
    if failures <= 0:
        return 0.0
    return float(min(max_s, first_s * 2 ** min(failures - 1, 32)))


def link_client(url: str, settings: Settings, **kwargs: object) -> redis.Redis:
    """A client that raises on the first connection error instead of retrying behind our back."""
    return new_client(url, settings, retry=Retry(NoBackoff(), 0), **kwargs)


class Reconnect:
    """Tracks one link's health. ``failed()`` logs the first failure of an outage and returns how long to
    wait before the next attempt; ``connected()`` logs the recovery and counts it in ``reconnects``."""

    def __init__(self, name: str, max_delay_s: float) -> None:
        self.name = name
        self.max_delay_s = max_delay_s
        self.failures = 0
        self.reconnects = 0
        self._down_since = 0.0

    def failed(self, exc: BaseException) -> float:
        self.failures += 1
        if self.failures == 1:
            self._down_since = time.monotonic()
            log.warning("%s: Redis connection lost (%s: %s); reconnecting with backoff up to %.1fs",
                        self.name, type(exc).__name__, exc, self.max_delay_s)
        return reconnect_delay_s(self.failures, self.max_delay_s)

    def connected(self) -> None:
        if self.failures:
            self.reconnects += 1
            log.info("%s: reconnected after %.1fs (%d attempts)", self.name,
                     time.monotonic() - self._down_since, self.failures)
        self.failures = 0


class LinkClients:
    """One :func:`link_client` per Redis URL for one connection attempt; ``close()`` drops them all."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._by_url: dict[str, redis.Redis] = {}

    def url(self, url: str) -> redis.Redis:
        client = self._by_url.get(url)
        if client is None:
            client = self._by_url[url] = link_client(url, self.settings)
        return client

    def service(self, service: str | None) -> redis.Redis:
        """The client of ``service``'s Redis (the global one for ``None``)."""
        return self.url(self.settings.broker_url(service))

    def close(self) -> None:
        for client in self._by_url.values():
            client.close()
        self._by_url.clear()
