"""TLS: rediss:// URLs verify the server certificate by default, and the whole platform runs over TLS."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from meetingtasks import configure, dispatch
from meetingtasks.connections import new_client
from meetingtasks.embedded import RedisServer
from meetingtasks.settings import Settings
from tests.conftest import WorkerProcess
from tests.support.tls_proxy import TlsProxy, make_certificates


@pytest.fixture
def tls(redis_server: RedisServer, redis_url: str, tmp_path: Path) -> Iterator[tuple[TlsProxy, Path]]:
    ca, cert, key = make_certificates(tmp_path / "certs")
    proxy = TlsProxy(redis_server.port, cert, key).start()
    yield proxy, ca
    proxy.stop()


def test_a_worker_and_the_dispatcher_work_over_tls(
    tls: tuple[TlsProxy, Path], env: dict[str, str], start_worker: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy, ca = tls
    url = f"rediss://localhost:{proxy.port}/0"
    tls_env = {"MEETINGTASKS_REDIS_URL": url, "MEETINGTASKS_REDIS_TLS_CA_CERTS": str(ca)}
    for name, value in {**env, **tls_env}.items():
        if name.startswith("MEETINGTASKS_"):
            monkeypatch.setenv(name, value)
    import tests.support.tasks  # noqa: F401

    configure(Settings())
    start_worker("ai", env_overrides=tls_env)
    assert dispatch("t_echo", {"tag": "over tls"}).wait(timeout=30) == {"tag": "over tls"}


def test_an_unknown_certificate_is_refused_by_default(tls: tuple[TlsProxy, Path]) -> None:
    proxy, _ = tls
    settings = Settings(redis_url=f"rediss://localhost:{proxy.port}/0")  # no CA given: system CAs only
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        new_client(settings.broker_url(), settings).ping()


def test_plain_redis_url_against_a_tls_port_fails_clearly(tls: tuple[TlsProxy, Path]) -> None:
    proxy, _ = tls
    settings = Settings(redis_url=f"redis://localhost:{proxy.port}/0", redis_socket_timeout_s=2)
    with pytest.raises(redis.RedisError):
        new_client(settings.broker_url(), settings).ping()
