"""Redis clients built from settings: TLS verified by default, one client per URL per process."""

from __future__ import annotations

import os
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

import redis

from meetingtasks.settings import Settings

_CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
_lock = threading.Lock()
_clients: dict[tuple[int, str], redis.Redis] = {}


def ssl_options(settings: Settings) -> dict[str, Any]:
    """TLS options for redis-py and kombu. ``rediss://`` verifies certificates unless told otherwise."""
    opts: dict[str, Any] = {"ssl_cert_reqs": _CERT_REQS[settings.redis_tls_cert_reqs]}
    if settings.redis_tls_ca_certs:
        opts["ssl_ca_certs"] = settings.redis_tls_ca_certs
    if settings.redis_tls_certfile:
        opts["ssl_certfile"] = settings.redis_tls_certfile
    if settings.redis_tls_keyfile:
        opts["ssl_keyfile"] = settings.redis_tls_keyfile
    return opts


def is_tls(url: str) -> bool:
    return urlsplit(url).scheme == "rediss"


def new_client(url: str, settings: Settings, **kwargs: Any) -> redis.Redis:
    """A fresh client for ``url`` (password, ACL user and db taken from the URL)."""
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_socket_timeout_s,
        "socket_connect_timeout": settings.redis_socket_timeout_s,
        "health_check_interval": 10,
        "retry_on_timeout": False,
    }
    if is_tls(url):
        options.update(ssl_options(settings))
    options.update(kwargs)
    return redis.Redis.from_url(url, **options)


def shared_client(url: str, settings: Settings) -> redis.Redis:
    """The client for ``url`` shared within this process; a forked child gets its own pool."""
    key = (os.getpid(), url)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = new_client(url, settings)
    return client


def reset_shared_clients() -> None:
    """Drop every shared client (tests that restart Redis on a new port call this)."""
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
