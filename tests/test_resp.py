"""The one encoder and exchange (meetingtasks.store.resp) against a real redis-server: what it packs, Redis stores and
runs as meant, for the odd values (bytes, unicode, big ints, floats, empty strings); redis-py's pipelines (the
bridge's transaction) pack the same bytes; error replies, NOSCRIPT and refused values leave the connection usable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from meetingtasks.core.errors import ReplicationTimeout
from meetingtasks.lua import Arg, LuaScript
from meetingtasks.operations.embedded import RedisServer
from meetingtasks.store.replication import ReplicaAcks
from meetingtasks.store.resp import Command, exchange, pack, pack_command

ODD: list[Arg] = [
    b"", "", b"\x00\xff\r\n$3\r\n", "é€😀", "line\r\nbreak", " spaced ",
    0, -1, 2**63, -(2**70), 10**40,
    0.1, 1 / 3, -0.0, 1e-7, 1e20, 5e-324, float("inf"), 1733394882.1234567,
]


def as_written(value: Arg) -> bytes:
    """What Redis must hold for ``value``: its bytes, UTF-8 text, or the digits of ``repr``."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return repr(value).encode()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_redis_stores_every_odd_value_as_written(client: redis.Redis) -> None:
    # Given a list, a hash and a string written through the encoder with the odd values
    commands: list[Command] = [("RPUSH", "resp:list", *ODD),
                               ("HSET", "resp:hash", *[x for n, v in enumerate(ODD) for x in (f"f{n}", v)]),
                               ("SET", "resp:empty", "")]
    replies = exchange(client, [commands])
    # Then Redis answered each command, and holds each value as written, byte for byte
    assert replies == [len(ODD), len(ODD), b"OK"]
    assert client.lrange("resp:list", 0, -1) == [as_written(v) for v in ODD]
    assert client.hgetall("resp:hash") == {f"f{n}".encode(): as_written(v) for n, v in enumerate(ODD)}
    assert client.get("resp:empty") == b""


def test_redis_runs_commands_with_the_numbers_meant(client: redis.Redis) -> None:
    # Given numeric arguments Redis itself interprets
    commands: list[Command] = [("SET", "resp:n", 2**62), ("INCRBY", "resp:n", 2**62 - 1),
                               ("INCRBYFLOAT", "resp:f", 0.1), ("INCRBYFLOAT", "resp:f", 1e-7),
                               ("ZADD", "resp:z", 1e20, "far", -0.5, "neg", 2**53, "big"),
                               ("ZRANGE", "resp:z", 0, -1),
                               ("EVAL", "return ARGV", 0, *ODD)]
    # When they go through the encoder, in one write
    replies = exchange(client, [commands])
    # Then Redis computed with the values meant, and a script sees each argument as written
    assert replies[1] == 2**63 - 1
    assert float(replies[3]) == pytest.approx(0.1000001)
    assert replies[5] == [b"neg", b"big", b"far"]
    assert replies[6] == [as_written(v) for v in ODD]


def test_the_encoder_packs_what_redis_py_packs(client: redis.Redis) -> None:
    # redis-py's connections (every pipeline of the platform, the bridge's transaction) pack with the same hiredis
    # packer: a value goes as the same bytes on every path.
    connection: Any = client.connection_pool.make_connection()
    for command in [("RPUSH", "resp:list", *ODD), ("EVALSHA", "a" * 40, 2, "k1", "k2", b"msg", 3, 0.5)]:
        assert pack_command(command) == b"".join(connection.pack_command(*command))
    assert pack([("PING",), ("ECHO", "é")]) == b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$2\r\n\xc3\xa9\r\n"


@pytest.mark.parametrize("bad", [True, None, {"a": 1}, ["x"], bytearray(b"x")])
def test_a_value_redis_cannot_hold_is_refused_by_name_and_nothing_is_sent(client: redis.Redis, bad: Any) -> None:
    # When a command carries a value that has no Redis form (True would silently become "True" or 1)
    with pytest.raises(TypeError, match=rf"cannot send a {type(bad).__name__} to Redis.*'SET'"):
        exchange(client, [[("SET", "resp:before", "x"), ("SET", "resp:bad", bad)]])
    # Then nothing of the write was sent, and the client goes on
    assert client.exists("resp:before", "resp:bad") == 0
    assert exchange(client, [[("PING",)]]) == [b"PONG"]


def test_an_error_reply_is_raised_after_every_reply_is_read(client: redis.Redis) -> None:
    # Given a write whose middle command fails
    commands: list[Command] = [("SET", "resp:a", 1), ("INCR", "resp:text-is-not-a-number"), ("SET", "resp:c", 3)]
    client.set("resp:text-is-not-a-number", "x")
    # When it is exchanged, Then the error is raised
    with pytest.raises(redis.ResponseError, match="not an integer"):
        exchange(client, [commands])
    # and the commands around it ran, and the same pool's connection reads its own replies after
    assert client.mget("resp:a", "resp:c") == [b"1", b"3"]
    assert exchange(client, [[("ECHO", "next")]]) == [b"next"]


def test_groups_go_as_they_are_built_and_replies_come_in_order(client: redis.Redis) -> None:
    built: list[int] = []

    def groups() -> Iterator[list[Command]]:
        for n in range(3):
            built.append(n)
            yield [("RPUSH", "resp:order", n), ("LLEN", "resp:order")]

    assert exchange(client, groups()) == [1, 1, 2, 2, 3, 3]
    assert built == [0, 1, 2]


def test_an_evalsha_meeting_an_empty_script_cache_runs_once_as_eval(client: redis.Redis) -> None:
    # Given a script Redis does not hold (its cache flushed)
    script = LuaScript("redis.call('INCR', KEYS[1]); return ARGV[1]")
    client.script_flush()
    # When it is called by sha with its source at hand
    [reply] = exchange(client, [[("EVALSHA", script.sha, 1, "resp:runs", "é")]],
                       scripts={script.sha: script.source})
    # Then it ran exactly once and answered
    assert reply == "é".encode()
    assert client.get("resp:runs") == b"1"
    # and without its source the NOSCRIPT is the caller's to see
    client.script_flush()
    with pytest.raises(redis.exceptions.NoScriptError):
        exchange(client, [[("EVALSHA", script.sha, 1, "resp:runs", "x")]])
    assert client.get("resp:runs") == b"1"


def test_a_replica_refusing_writes_is_raised_at_once_and_the_connection_dropped(tmp_path: Path) -> None:
    # Given a replica (what a client meets during a failover before it learns the new primary)
    primary = RedisServer(tmp_path / "primary").start()
    replica = RedisServer(tmp_path / "replica", extra_args=["--replicaof", "127.0.0.1", str(primary.port)]).start()
    client = redis.Redis.from_url(replica.url)
    try:
        # When a write of several commands (and a WAIT) goes to it
        with pytest.raises(redis.exceptions.ReadOnlyError):
            exchange(client, [[("SET", "resp:a", 1), ("SET", "resp:b", 2)]], acks=ReplicaAcks(1, 10))
        # Then the refusal comes as it is (callers retry it on Sentinel URLs), and the connection with replies
        # left unread is not reused: the next request reads its own reply
        assert exchange(client, [[("ECHO", "fresh")]]) == [b"fresh"]
    finally:
        client.close()
        replica.stop(kill=True)  # (a replica's orderly shutdown waits ~10 s for its primary)
        primary.stop()


@pytest.fixture
def checked_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client whose connections' health check (a PING redis-py sends before a command, once
    ``health_check_interval`` has passed since the connection last read a reply) falls due before every send: what
    a 10 s interval does at one moment of a long request on a connection idle for about 10 s."""
    client = redis.Redis.from_url(redis_url, health_check_interval=10)
    conn = client.connection_pool.get_connection()
    conn.connect()  # (with the interval that short, redis-py's own handshake would trip over the check)
    conn.health_check_interval = 1e-9
    conn.next_health_check = 0.0
    client.connection_pool.release(conn)
    yield client
    client.close()


def test_a_health_check_falling_due_between_the_sends_of_one_request_reads_no_earlier_reply(
        checked_client: redis.Redis) -> None:
    # Given a request sent in groups (dispatch_batch streams one enqueue script call per 500 tasks), whose replies
    # are read only after the last group is sent
    def groups() -> Iterator[list[Command]]:
        for n in range(3):
            yield [("RPUSH", "resp:checked", n)]

    # When the health check falls due between its sends, Then the replies are the request's own, in order
    assert exchange(checked_client, groups()) == [1, 2, 3]
    # and the connection, released, reads its own replies after
    assert exchange(checked_client, [[("LRANGE", "resp:checked", 0, -1)]]) == [[b"0", b"1", b"2"]]


def test_a_health_check_falling_due_before_the_wait_reads_no_earlier_reply(checked_client: redis.Redis) -> None:
    # Given a write confirmed by WAIT, on a Redis with no replica to confirm it
    # When the health check falls due between the write and the WAIT
    # Then the WAIT's own count is what is judged: the write is stored, and not confirmed
    with pytest.raises(ReplicationTimeout, match="0 of min_replica_acks=1"):
        exchange(checked_client, [[("SET", "resp:waited", 1)]], acks=ReplicaAcks(1, 10))
    assert exchange(checked_client, [[("GET", "resp:waited")]]) == [b"1"]
