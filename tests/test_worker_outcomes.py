"""Task outcomes buffered on the consuming channel (meetingtasks.worker.outcomes) and applied with the acks."""

from __future__ import annotations

import os
import time
from pathlib import Path

import redis

from meetingtasks.core.settings import Settings
from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.operations.embedded import RedisServer
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status
from meetingtasks.worker.app import create_app
from meetingtasks.worker.outcomes import outcome_entry, register_sink, sink_for, unregister_sink
from tests.support.waiting import wait_for


def _unacked(r: redis.Redis, platform: Platform, tag: str) -> None:
    r.hset(platform.keys.unacked("ai"), tag, "[{}, \"\", \"ai.normal\"]")
    r.zadd(platform.keys.unacked_index("ai"), {tag: time.time()})


def test_a_buffered_outcome_is_recorded_with_its_ack_and_published(platform: Platform, r: redis.Redis) -> None:
    handle = Dispatcher(platform).dispatch("t_echo", {"tag": "buffered"})
    r.hset(platform.keys.status(handle.id), "deliveries", 1)  # as the fetch counted it
    _unacked(r, platform, "tag-1")
    pubsub = r.pubsub()
    pubsub.subscribe(platform.keys.status_channel)
    wait_for(lambda: pubsub.get_message(timeout=0.1) is not None)  # the subscribe confirmation
    app = create_app("ai", platform.settings)
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        channel.buffer_outcome(outcome_entry(handle.id, Status.SUCCEEDED, 1,
                                             {"type": "t_echo", "result": {"echo": "buffered"}}, time.time()))
        channel.buffer_ack("tag-1")
        assert handle.status() == Status.QUEUED  # nothing written until the buffer is applied
        channel.flush_acks()
        record = handle.info()
        assert record.status == Status.SUCCEEDED
        assert record.result == {"echo": "buffered"}
        assert [s for s, _, _ in record.history] == [Status.QUEUED, Status.SUCCEEDED]
        assert r.hget(platform.keys.status(handle.id), "deliveries") == b"0"  # the run ended: the count restarts
        assert r.hlen(platform.keys.unacked("ai")) == 0
        assert r.zcard(platform.keys.unacked_index("ai")) == 0
    event = wait_for(lambda: pubsub.get_message(timeout=0.1))
    assert b'"status":"SUCCEEDED"' in event["data"] and handle.id.encode() in event["data"]
    pubsub.close()


def test_outcomes_that_cannot_be_recorded_are_kept_for_the_next_try(tmp_path: Path) -> None:
    import tests.support.tasks  # noqa: F401 - registers t_echo

    server = RedisServer(tmp_path / "redis").start()
    try:
        settings = Settings(redis_url=server.url, redis_socket_timeout_s=1.0)
        platform = Platform(settings)
        client = redis.Redis.from_url(server.url)
        handle = Dispatcher(platform).dispatch("t_echo", {"tag": "outage"})
        _unacked(client, platform, "tag-2")
        app = create_app("ai", settings)
        with app.connection_for_read() as conn:
            channel = conn.default_channel
            server.stop()
            channel.buffer_outcome(outcome_entry(handle.id, Status.SUCCEEDED, 1, {"type": "t_echo"}, time.time()))
            channel.buffer_ack("tag-2")
            channel.flush_acks()  # Redis is away: logged, kept, not raised
            server.start()
            client = redis.Redis.from_url(server.url)
            assert client.hget(platform.keys.status(handle.id), "status") == b"QUEUED"  # restored from its AOF
            channel.flush_acks()
            assert client.hget(platform.keys.status(handle.id), "status") == b"SUCCEEDED"
            assert client.hlen(platform.keys.unacked("ai")) == 0
    finally:
        server.stop()


def test_a_forked_child_does_not_use_its_parents_channel() -> None:
    class Sink:
        def buffer_outcome(self, entry: list[str]) -> None:
            raise AssertionError("not called")

    sink = Sink()
    register_sink("media", sink)
    try:
        assert sink_for("media") is sink
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: a prefork pool process writes its outcomes itself
            os.write(write_end, b"none" if sink_for("media") is None else b"sink")
            os._exit(0)
        os.waitpid(pid, 0)
        assert os.read(read_end, 4) == b"none"
    finally:
        unregister_sink("media", sink)
    assert sink_for("media") is None
