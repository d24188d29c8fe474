"""TLS against a redis-server started with TLS: rediss:// URLs verify the server certificate by default, and
the whole platform (dispatcher and worker) runs over TLS."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from meetingtasks import configure, dispatch
from meetingtasks.core.settings import Settings
from meetingtasks.store.connections import new_client, reset_shared_clients
from tests.support.tls_redis import TlsRedisServer
from tests.support.workers import WorkerProcess

# Slow tier: fault injection (kills, restarts, outages, refused writes) waits out real timeouts.
pytestmark = pytest.mark.slow


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedisServer]:
    server = TlsRedisServer(tmp_path / "tls").start()
    yield server
    server.stop()
    reset_shared_clients()


def test_a_worker_and_the_dispatcher_work_over_tls(
    tls_redis: TlsRedisServer, env: dict[str, str], start_worker: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tls_env = {"MEETINGTASKS_REDIS_URL": tls_redis.url, "MEETINGTASKS_REDIS_TLS_CA_CERTS": str(tls_redis.ca)}
    for name, value in {**env, **tls_env}.items():
        if name.startswith("MEETINGTASKS_"):
            monkeypatch.setenv(name, value)
    import tests.support.tasks  # noqa: F401

    configure(Settings())
    start_worker("ai", env_overrides=tls_env)
    assert dispatch("t_echo", {"tag": "over tls"}).wait(timeout=30) == {"tag": "over tls"}


def test_an_unknown_certificate_is_refused_by_default(tls_redis: TlsRedisServer) -> None:
    settings = Settings(redis_url=tls_redis.url)  # no CA given: system CAs only
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        new_client(settings.broker_url(), settings).ping()


def test_plain_redis_url_against_a_tls_port_fails_clearly(tls_redis: TlsRedisServer) -> None:
    settings = Settings(redis_url=f"redis://localhost:{tls_redis.port}/0", redis_socket_timeout_s=2)
    with pytest.raises(redis.RedisError):
        new_client(settings.broker_url(), settings).ping()
