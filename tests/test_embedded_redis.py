"""The embedded redis-server's helpers that the benchmark relies on to measure the same thing in every round."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis

from meetingtasks.core.errors import ConfigurationError
from meetingtasks.operations.embedded import RedisServer, compact_aof, free_port
from meetingtasks.operations.embedded_sentinel import SentinelGroup


def test_compact_aof_leaves_a_rewritten_file_and_no_rewrite_running(own_redis: RedisServer) -> None:
    # Given an append-only file that has grown since Redis started
    client = redis.Redis.from_url(own_redis.url)
    client.set("seed", "1")
    compact_aof(client)
    for i in range(2_000):
        client.set(f"k{i}", "x" * 100)
    grown = client.info("persistence")
    assert int(grown["aof_current_size"]) > int(grown["aof_base_size"])
    client.flushall()
    # When it is compacted
    compact_aof(client)
    # Then the file is as small as the last rewrite left it (nothing appended since) and no rewrite is running
    after = client.info("persistence")
    assert int(after["aof_current_size"]) == int(after["aof_base_size"])
    assert int(after["aof_current_size"]) < int(grown["aof_current_size"])
    assert not int(after["aof_rewrite_in_progress"]) and not int(after["aof_rewrite_scheduled"])
    assert after["aof_last_bgrewrite_status"] == "ok"


def test_free_port_never_hands_out_a_port_twice() -> None:
    # A Sentinel group takes its ports before any of its processes binds one: two sentinels once got the same one
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


def test_a_server_whose_port_another_server_holds_fails_to_start(own_redis: RedisServer, tmp_path: Path) -> None:
    # Given a second server told to use the port of a running one
    second = RedisServer(tmp_path / "second", port=own_redis.port)
    # When it starts, the running one answers on that port, but it is not the second server
    with pytest.raises(ConfigurationError, match="exited at start"):
        second.start()
    # Then the second server is not left running and the first still serves
    assert second.process is None or second.process.poll() is not None
    assert redis.Redis.from_url(own_redis.url).ping()


def test_a_sentinel_group_that_fails_to_start_stops_what_it_started(tmp_path: Path) -> None:
    group = SentinelGroup(tmp_path / "ha")
    # Given no time for the replica to sync: the group fails after its data nodes started
    with pytest.raises(ConfigurationError, match="did not catch up"):
        group.start(timeout_s=0)
    # Then none of its processes is left answering
    for part in [*group.nodes, *group.sentinels]:
        assert part.process is None
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", part.port), timeout=0.5).close()
