"""``unix://`` Redis URLs: every part that speaks to Redis through Celery or kombu takes the
same translation (connections.celery_broker): the workers, beat and Flower."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from redbeat.schedulers import get_redis

from meetingtasks.core.settings import Settings
from meetingtasks.operations.embedded import RedisServer
from meetingtasks.operations.flower import create_flower_app
from meetingtasks.scheduler.app import create_beat_app
from meetingtasks.store.connections import celery_broker, kombu_socket_url
from meetingtasks.worker.app import create_app
from meetingtasks.worker.transport import Transport


@pytest.fixture
def unix_redis() -> Iterator[str]:
    """A redis-server listening on a unix socket too (a short path: sockets allow ~100 bytes); its ``unix://``
    URL, db 2."""
    directory = Path(tempfile.mkdtemp(prefix="mt-unix-", dir="/tmp"))
    socket_path = directory / "redis.sock"
    server = RedisServer(directory, extra_args=["--unixsocket", str(socket_path), "--unixsocketperm", "700"])
    try:
        server.start()
        yield f"unix://{socket_path}?db=2"
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)  # also when the server did not start


@pytest.mark.parametrize(("url", "kombu"), [
    ("unix:///run/redis.sock", "redis+socket:///run/redis.sock"),
    ("unix:///run/redis.sock?db=3", "redis+socket:///run/redis.sock?virtual_host=3"),
    ("unix://u:p%40w@/run/redis.sock?db=1", "redis+socket://u:p%40w@/run/redis.sock?virtual_host=1"),
    ("unix:///run/redis.sock?db=1&password=pw", "redis+socket://:pw@/run/redis.sock?virtual_host=1"),
])
def test_a_unix_url_is_spelled_as_kombu_reads_it(url: str, kombu: str) -> None:
    assert kombu_socket_url(url) == kombu
    assert celery_broker(url, Settings(redis_url=url))["broker_url"] == kombu


def test_a_worker_on_a_unix_url_keeps_the_platforms_transport() -> None:
    # kombu takes the transport a URL's "x+" prefix names over broker_transport: redis+socket:// would be stock kombu
    with create_app("ai", Settings(redis_url="unix:///run/redis.sock?db=1")).connection_for_read() as conn:
        assert conn.transport_cls == "meetingtasks" and isinstance(conn.transport, Transport)
        assert conn.hostname == "socket:///run/redis.sock?virtual_host=1"


def test_beat_and_flower_reach_redis_over_its_unix_socket(unix_redis: str) -> None:
    settings = Settings(redis_url=unix_redis, flower_allow_no_auth=True)
    beat = create_beat_app(settings)
    client = get_redis(beat)  # redbeat's client: the schedule and beat's lock
    client.set("mt-test:beat", "over-unix")
    flower = create_flower_app(settings)
    with flower.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1)
        flower_client = conn.default_channel.client
        assert flower_client.get("mt-test:beat") == b"over-unix"  # the same server and db
        assert flower_client.connection_pool.connection_kwargs["db"] == 2
