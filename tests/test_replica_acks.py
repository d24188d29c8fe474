"""min_replica_acks: a dispatch, a batch and an event return once a replica confirmed them; without the replicas
they were asked for, the producer hears it (ReplicationTimeout) and the work is still queued on the primary."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from meetingtasks.core.errors import ReplicationTimeout
from meetingtasks.core.settings import Settings
from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.events.publisher import EventPublisher
from meetingtasks.operations.embedded import RedisServer
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess


def test_without_a_replica_a_dispatch_says_it_is_not_replicated_and_stays_queued(platform: Platform) -> None:
    # Given a primary with no replica, and producers asking for one confirmation
    strict = Platform(platform.settings.model_copy(update={"min_replica_acks": 1, "replica_ack_timeout_ms": 50}))
    dispatcher = Dispatcher(strict)
    r = platform.redis()
    # When a task is dispatched (single, deduplicated, batch) and an event published
    for call in (lambda: dispatcher.dispatch("t_echo", {"tag": "one"}),
                 lambda: dispatcher.dispatch("t_echo", {"tag": "once"}, dedup_key="k1"),
                 lambda: dispatcher.dispatch_batch([("t_echo", {"tag": "b1"}), ("t_echo", {"tag": "b2"})]),
                 lambda: EventPublisher(strict).publish("user_events", "user.logged_in", {}, source="test")):
        # Then each raises ReplicationTimeout naming the shortfall
        with pytest.raises(ReplicationTimeout, match="0 of min_replica_acks=1"):
            call()
    # and what was written is on the primary all the same
    assert r.llen("ai.normal") == 4


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    primary = RedisServer(tmp_path / "primary").start()
    replica = RedisServer(tmp_path / "replica", extra_args=["--replicaof", "127.0.0.1", str(primary.port)]).start()
    yield primary, replica
    replica.stop()
    primary.stop()


@pytest.mark.slow
def test_with_a_replica_a_returned_dispatch_is_already_on_the_replica(
        replicated: tuple[RedisServer, RedisServer], platform: Platform) -> None:
    primary, replica = replicated
    strict = Platform(Settings(redis_url=primary.url, min_replica_acks=1, replica_ack_timeout_ms=5000))
    on_replica = Platform(Settings(redis_url=replica.url)).redis()
    # When dispatches return (single, batch)
    Dispatcher(strict).dispatch("t_echo", {"tag": "one"})
    Dispatcher(strict).dispatch_batch([("t_echo", {"tag": f"b{i}"}) for i in range(50)])
    # Then the replica holds them already, with no wait of ours
    assert on_replica.llen("ai.normal") == 51


@pytest.fixture
def no_wait_url(platform: Platform, redis_url: str) -> Iterator[str]:
    """The URL of a Redis user that may run every command but WAIT (a restrictive ACL; a primary demoted since
    the write refuses WAIT too)."""
    admin = platform.redis()
    admin.execute_command("ACL", "SETUSER", "no-wait", "on", ">pw", "~*", "&*", "+@all", "-wait")
    parts = urlsplit(redis_url)
    yield urlunsplit(parts._replace(netloc=f"no-wait:pw@{parts.hostname}:{parts.port}"))
    admin.execute_command("ACL", "DELUSER", "no-wait")


def test_a_refused_wait_tells_a_producer_its_work_is_stored_but_unconfirmed(
        platform: Platform, no_wait_url: str) -> None:
    # Given producers asking for one replica's confirmation, as a user Redis refuses WAIT
    strict = Platform(Settings(redis_url=no_wait_url, min_replica_acks=1, replica_ack_timeout_ms=50))
    dispatcher = Dispatcher(strict)
    publisher = EventPublisher(strict)
    # When they dispatch (single, deduplicated, batch) and publish (one, several)
    for call in (lambda: dispatcher.dispatch("t_echo", {"tag": "one"}),
                 lambda: dispatcher.dispatch("t_echo", {"tag": "once"}, dedup_key="k-refused"),
                 lambda: dispatcher.dispatch_batch([("t_echo", {"tag": "b1"}), ("t_echo", {"tag": "b2"})]),
                 lambda: publisher.publish("user_events", "user.logged_in", {}, source="test"),
                 lambda: publisher.publish_many([{"channel": "user_events", "type": "user.status_changed",
                                                  "payload": {}, "source": "test"}])):
        # Then each hears that nothing confirmed it, as ReplicationTimeout (not as a failed write)
        with pytest.raises(ReplicationTimeout, match="refused the WAIT"):
            call()
    # and every write stands on the primary
    r = platform.redis()
    assert r.llen("ai.normal") == 4
    assert r.xlen(platform.keys.event_stream("user_events")) == 2


@pytest.mark.slow
def test_a_worker_whose_wait_is_refused_runs_what_it_fetched(
        platform: Platform, no_wait_url: str, r: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    # Given a worker asked for one replica's confirmation of what it writes, as a user Redis refuses WAIT
    start_worker("ai", "--pool", "threads", "--concurrency", "1",
                 env_overrides={"MEETINGTASKS_REDIS_URL": no_wait_url, "MEETINGTASKS_MIN_REPLICA_ACKS": "1",
                                "MEETINGTASKS_REPLICA_ACK_TIMEOUT_MS": "50"})
    # When tasks come one after another, so that every fetch after the first applies an ack and asks WAIT
    d = Dispatcher(platform)
    for i in range(5):
        handle = d.dispatch("t_echo", {"tag": f"t{i}"})
        # Then each runs at once: a refused WAIT is logged, and the batch its fetch took runs all the same (it was
        # dropped, leased, for the restore sweep to bring back, and the next fetch's WAIT was refused again)
        wait_for(lambda h=handle: h.status() == Status.SUCCEEDED, timeout_s=2.5, message=f"task {i} to run")
    # and a task that keeps failing is retried and dead-lettered once (its filing, confirmed by a WAIT, is not
    # taken for a failed write)
    failing = d.dispatch("t_always_fails", {"tag": "bad"})
    wait_for(lambda: failing.status() == Status.DEAD_LETTERED, timeout_s=10, message="the dead letter")
    assert r.hlen(platform.keys.dlq("ai")) == 1
    assert r.llen("test:attempts") == 3, "one run per attempt (two retries)"
