"""min_replica_acks: a dispatch, a batch and an event return once a replica confirmed them; without the replicas
they were asked for, the producer hears it (ReplicationTimeout) and the work is still queued on the primary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from meetingtasks.core.errors import ReplicationTimeout
from meetingtasks.core.settings import Settings
from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.events.publisher import EventPublisher
from meetingtasks.operations.embedded import RedisServer
from meetingtasks.store.platform import Platform


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
