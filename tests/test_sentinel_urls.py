"""Sentinel URLs: parsed into the sentinels, master, db and credentials; refused in one line when malformed;
translated into kombu's spelling for Celery; and a client built from one reaches the primary the sentinels name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import tests.support.tasks  # noqa: F401 - registers t_echo
from meetingtasks.core.errors import ConfigurationError
from meetingtasks.core.sentinel import SentinelUrl
from meetingtasks.core.settings import Settings, load_settings
from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.operations.embedded_sentinel import MASTER_NAME, SentinelGroup
from meetingtasks.store.connections import SentinelSSLConnection, celery_broker, new_client
from meetingtasks.store.platform import Platform
from meetingtasks.worker.app import create_app
from tests.support.waiting import wait_for


def test_a_sentinel_url_names_its_sentinels_master_db_and_the_primarys_credentials() -> None:
    url = SentinelUrl.parse("sentinel://app:s%40cret@h1:26379,h2:26380,[::1]/orders/3")
    assert url.sentinels == (("h1", 26379), ("h2", 26380), ("::1", 26379))
    assert (url.master_name, url.db, url.username, url.password, url.tls) == ("orders", 3, "app", "s@cret", False)
    assert SentinelUrl.parse("sentinels://h1/orders").tls and SentinelUrl.parse("sentinels://h1/orders").db == 0
    assert url.redacted() == "sentinel://app:***@h1:26379,h2:26380,[::1]:26379/orders/3"


@pytest.mark.parametrize(("url", "why"), [
    ("sentinel://h1:26379", "names no master"),
    ("sentinel:///orders/0", "names no sentinel host"),
    ("sentinel://h1:x/orders/0", "invalid port"),
    ("sentinel://h1/orders/zero", "db must be a number"),
    ("sentinel://h1/orders/0/extra", "too many path parts"),
])
def test_a_malformed_sentinel_url_is_one_line_naming_what_is_wrong(url: str, why: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEETINGTASKS_SERVICE_REDIS_URLS", f'{{"ai": "{url}"}}')
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert why in str(caught.value) and "\n" not in str(caught.value)


def test_celery_gets_kombus_spelling_with_the_master_name_and_the_sentinel_password() -> None:
    settings = Settings(redis_url="sentinel://:pw-1234567890@h1:1,h2:2/orders/2",
                        redis_sentinel_password="sentinel-pw-0987654321")
    broker = celery_broker(settings.broker_url(), settings)
    assert broker["broker_url"] == "sentinel://:pw-1234567890@h1:1/2;sentinel://:pw-1234567890@h2:2/2"
    assert broker["broker_transport_options"]["master_name"] == "orders"
    assert broker["broker_transport_options"]["sentinel_kwargs"]["password"] == "sentinel-pw-0987654321"
    app = create_app("ai", settings)
    assert app.conf.broker_transport == "meetingtasks.worker.transport:SentinelTransport"
    assert app.conf.broker_transport_options["master_name"] == "orders"


def test_a_workers_connection_keeps_its_transport_when_kombu_fails_over_to_the_next_url() -> None:
    # kombu switches to the next ';'-separated URL on a lost connection and takes the transport its scheme names;
    # the workers' transport (the atomic fetch) must survive that: one URL, every sentinel in a transport option
    settings = Settings(redis_url="sentinel://h1:1,h2:2,h3:3/orders/0")
    with create_app("ai", settings).connection_for_read() as conn:
        conn.maybe_switch_next()
        conn.maybe_switch_next()
        assert conn.transport_cls == "meetingtasks.worker.transport:SentinelTransport"
        assert conn.transport_options["mt_sentinel_url"] == settings.redis_url


def test_sentinels_url_speaks_tls_to_the_sentinels_and_the_primary_with_the_rediss_options(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("unused: nothing connects here")
    settings = Settings(redis_url="sentinels://h1:26379/orders/0", redis_tls_ca_certs=str(ca))
    client = new_client(settings.broker_url(), settings)
    pool = client.connection_pool
    assert pool.connection_class is SentinelSSLConnection
    assert pool.connection_kwargs["ssl_ca_certs"] == str(ca)
    sentinel_side = pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs
    assert sentinel_side["ssl_ca_certs"] == str(ca)
    assert celery_broker(settings.broker_url(), settings)["broker_use_ssl"]["ssl_ca_certs"] == str(ca)


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    group = SentinelGroup(tmp_path / "ha").start()
    yield group
    group.stop()


@pytest.mark.slow
def test_a_client_of_a_sentinel_url_writes_to_the_primary_and_the_replica_gets_it(group: SentinelGroup) -> None:
    client = new_client(group.url, Settings(redis_url=group.url))
    client.set("where", "primary")
    assert client.connection_pool.get_master_address()[1] == group.nodes[0].port
    group.wait_synced()
    replica = new_client(group.nodes[1].url, Settings())
    assert replica.get("where") == b"primary"
    client.close()
    replica.close()


@pytest.mark.slow
def test_a_dispatch_after_a_coordinated_failover_lands_on_the_new_primary(group: SentinelGroup,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a producer whose pooled connection talks to the primary
    settings = Settings(redis_url=group.url, dispatch_retry_s=30)
    dispatcher = Dispatcher(Platform(settings))
    dispatcher.dispatch("t_echo", {"tag": "before"})
    first = group.nodes[0].port
    # When the sentinels hand the primary role to the replica (the old primary turns replica: READONLY, UNBLOCKED)
    group.wait_synced()
    sentinel = redis.Redis(port=group.sentinels[0].port)

    def failover_started() -> bool:
        try:  # refused (NOGOODSLAVE) until the sentinel has had the replica's INFO
            return bool(sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME))
        except redis.ResponseError:
            return False

    wait_for(failover_started, 30, message="the sentinel to accept a failover")
    wait_for(lambda: group.primary_port() not in (None, first), 30, message="the replica to be promoted")
    old_primary = redis.Redis(port=first)
    wait_for(lambda: old_primary.info("replication")["role"] == "slave", 30, message="the old primary to turn replica")
    old_primary.close()
    # Then the next dispatch, whose pooled connection still reaches the old primary (now refusing writes), goes to the
    # new primary through the same pool
    dispatcher.dispatch("t_echo", {"tag": "after"})
    new_primary = redis.Redis(port=group.primary_port() or 0)
    wait_for(lambda: new_primary.llen("ai.normal") == 2, 10, message="both tasks on the new primary")
    sentinel.close()
    new_primary.close()
