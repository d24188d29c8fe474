"""The embedded redis-server's helpers that the benchmark relies on to measure the same thing in every round."""

from __future__ import annotations

import redis

from meetingtasks.operations.embedded import RedisServer, compact_aof


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
