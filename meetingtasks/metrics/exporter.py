"""The Prometheus exporter: task counters from the status feed, plus Redis-derived gauges at scrape time."""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from meetingtasks.core.errors import ConfigurationError
from meetingtasks.core.sentinel import SentinelUrl, is_sentinel
from meetingtasks.metrics.collector import PlatformCollector
from meetingtasks.metrics.feed import StatusFeed
from meetingtasks.metrics.tasks import TaskMetrics
from meetingtasks.store.connections import new_client
from meetingtasks.store.platform import Platform
from meetingtasks.store.rollup import RollupRecorder

log = logging.getLogger(__name__)


def redis_label(url: str) -> str:
    """``host:port/db`` of a Redis URL, without credentials, to name a feed in logs."""
    if is_sentinel(url):
        target = SentinelUrl.parse(url)
        return f"{target.master_name}@{','.join(f'{h}:{p}' for h, p in target.sentinels)}/{target.db}"
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


class Exporter:
    """Serves ``/metrics`` on ``host:port`` (port 0 picks a free one). ``stop()`` is safe twice."""

    def __init__(self, platform: Platform, *, host: str | None = None, port: int | None = None) -> None:
        self.platform = platform
        self.host = host if host is not None else platform.settings.exporter_host
        self.port = port if port is not None else platform.settings.exporter_port
        self.registry = CollectorRegistry()
        self.tasks = TaskMetrics(self.registry)
        self.registry.register(PlatformCollector(platform))
        self.rollup = RollupRecorder(platform)
        self.feeds = [
            StatusFeed(redis_label(url), new_client(url, platform.settings),
                       platform.keys.status_channel, self._observe)
            for url in sorted(set(platform.redis_urls().values()))
        ]
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def _observe(self, event: dict[str, Any]) -> None:
        # Not into the rollup: the scripts that record a transition count it there (meetingtasks.store.rollup).
        self.tasks.observe(event)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def start(self, subscribe_timeout_s: float = 10.0) -> Exporter:
        """Subscribe to the status feeds (waiting up to ``subscribe_timeout_s`` each), then serve."""
        for feed in self.feeds:
            feed.start()
        for feed in self.feeds:
            if not feed.wait_subscribed(subscribe_timeout_s):
                log.warning("exporter: status feed %s not subscribed yet; task counters start when it is", feed.name)
        try:
            self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        except OSError as exc:
            self.stop()
            raise ConfigurationError(
                f"exporter: cannot listen on {self.host}:{self.port} ({exc.strerror}); "
                "choose another with --port or MEETINGTASKS_EXPORTER_PORT"
            ) from None
        self.port = int(self._server.server_port)
        self.rollup.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        for feed in self.feeds:
            feed.stop()
        self.rollup.stop()
