"""``sentinels://``: the platform on a TLS-only Sentinel group (a primary, a replica and three sentinels, all
listening on TLS ports only and replicating over TLS), through a failover.

Our own clients (dispatch, the ``status`` CLI) reach the sentinels and the primary over TLS with redis-py's
``Sentinel``; a real worker fetches and acks through our kombu Sentinel transport over TLS; a control ping goes
through kombu's own ``sentinel`` transport (what Flower and ``cancel``'s revoke use) over TLS. A plain
``sentinel://`` URL to the same sentinels gets nowhere. Then the primary is
SIGKILLed: the sentinels promote the replica (talking TLS to it and to each other), and the same worker and this
process go on with the new primary, still over TLS.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from redis.sentinel import SentinelConnectionPool

from meetingtasks import dispatch
from meetingtasks.core.settings import Settings
from meetingtasks.store.connections import celery_broker, new_client, reset_shared_clients
from meetingtasks.store.platform import configure
from tests.support.ha_tasks import INCLUDE
from tests.support.processes import ROOT
from tests.support.tls_redis import TlsSentinelGroup
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess, worker_env

pytestmark = pytest.mark.slow


def primary_address(settings: Settings) -> tuple[str, int]:
    """Where a new client of ours finds the primary (asking the sentinels over TLS)."""
    pool = new_client(settings.broker_url(), settings).connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    address: tuple[str, int] = pool.get_master_address()  # type: ignore[no-untyped-call]
    return address


@pytest.fixture
def tls_group(tmp_path: Path) -> Iterator[TlsSentinelGroup]:
    group = TlsSentinelGroup(tmp_path / "tls-ha").start()
    yield group
    group.stop()
    reset_shared_clients()


def test_dispatch_a_worker_and_status_run_over_tls_sentinels_through_a_failover(
    tls_group: TlsSentinelGroup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = worker_env(tls_group.url, MEETINGTASKS_INCLUDE=INCLUDE, MEETINGTASKS_REDIS_TLS_CA_CERTS=str(tls_group.ca),
                     MEETINGTASKS_REDIS_SOCKET_TIMEOUT_S="3", MEETINGTASKS_DISPATCH_RETRY_S="30")
    for key, value in env.items():
        if key.startswith("MEETINGTASKS_"):
            monkeypatch.setenv(key, value)
    reset_shared_clients()
    settings = Settings()
    configure(settings)
    ledger = tmp_path / "ledger"
    control = Celery("tls-sentinel-control", set_as_current=False)
    control.conf.update(**celery_broker(settings.broker_url(), settings))

    stale: list[str] = []

    def pinged() -> bool:
        try:
            replies = control.control.ping(timeout=2)
        except control.connection_for_write().connection_errors as exc:
            # A pooled connection to the killed primary fails once (as Flower's next inspect does); the next
            # broadcast takes a new connection, which asks the sentinels.
            stale.append(type(exc).__name__)
            return False
        return [name.split("@")[0] for reply in replies for name in reply] == ["ai"]

    def status(task_id: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "meetingtasks.cli", "status", task_id], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    # Given a worker on the sentinels:// URL (nothing listens in plain text anywhere)
    worker = WorkerProcess("ai", env, tmp_path / "worker.log", ["--pool", "threads", "--concurrency", "2"])
    try:
        worker.wait_ready(60)
        first_primary = tls_group.primary_port()
        assert first_primary == tls_group.nodes[0].port
        assert primary_address(settings) == ("127.0.0.1", first_primary)

        plain = Settings(redis_url=tls_group.url.replace("sentinels://", "sentinel://"), redis_socket_timeout_s=2)
        with pytest.raises(redis.RedisError):
            new_client(plain.broker_url(), plain).ping()

        # When a task is dispatched, Then the worker runs it and status reads its record, all over TLS
        before = dispatch("t_ha_ai", {"tag": "before", "ledger": str(ledger)})
        assert before.wait(timeout=60) == "before"
        shown = status(before.id)
        assert shown.returncode == 0 and "SUCCEEDED" in shown.stdout, shown.stderr
        wait_for(pinged, timeout_s=30, message="the worker to answer a control ping through kombu's sentinel transport")

        # When the primary is SIGKILLed and the sentinels promote the replica (over TLS)
        tls_group.nodes[0].stop(kill=True)
        killed_at = time.monotonic()
        wait_for(lambda: tls_group.primary_port() not in (None, first_primary), timeout_s=30,
                 message="the TLS sentinels to promote the replica")
        # Then the same worker and this process go on with the new primary
        after = dispatch("t_ha_ai", {"tag": "after", "ledger": str(ledger)})
        assert after.wait(timeout=60) == "after"
        recovered_s = time.monotonic() - killed_at
        shown = status(after.id)
        assert shown.returncode == 0 and "SUCCEEDED" in shown.stdout, shown.stderr
        assert primary_address(settings) == ("127.0.0.1", tls_group.nodes[1].port)
        wait_for(pinged, timeout_s=30, message="the worker to answer a control ping on the new primary")
        assert worker.proc.poll() is None, worker.log()[-3000:]
        assert ledger.read_text().split()[::2] == ["before", "after"]
        print(f"sentinels:// failover: a task dispatched after the kill ran {recovered_s:.1f} s after it; the "
              f"control app met {len(stale)} stale connection(s): {stale}")
    finally:
        control.close()
        worker.stop()
