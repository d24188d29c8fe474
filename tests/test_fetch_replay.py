"""bench.fetch_replay reads back the exact arguments of the fetch calls it records from Redis's MONITOR."""

from __future__ import annotations

import time

import redis

from bench.fetch_replay import monitor_args


def test_monitor_args_gives_back_the_arguments_a_client_sent(redis_url: str) -> None:
    watcher = redis.Redis.from_url(redis_url)
    connection = watcher.connection_pool.get_connection()
    connection.send_command("MONITOR")
    connection.read_response()
    # Given a command whose arguments hold quotes, backslashes, control and non-ASCII bytes, spaces, and nothing
    sent = [b"SET", b"key with spaces", b'a "quoted" \\ value\n\r\t\x07\x08\x00\xff\xe2\x82\xac', b"PX", b"60000"]
    redis.Redis.from_url(redis_url).execute_command(*sent)
    redis.Redis.from_url(redis_url).execute_command("SET", "empty", b"")
    # When MONITOR's lines are read back
    seen: list[list[bytes]] = []
    deadline = time.monotonic() + 10
    while len(seen) < 2 and time.monotonic() < deadline:
        line = connection.read_response(disable_decoding=True)
        if isinstance(line, bytes) and b'"SET"' in line:
            seen.append(monitor_args(line))
    connection.disconnect()
    # Then each argument comes back byte for byte
    assert seen == [sent, [b"SET", b"empty", b""]]
