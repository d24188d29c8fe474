"""Idle workers wait for a wake token and then take the work with their atomic fetch; none of them pops a message
with a plain BRPOP (kombu's two-step path: pop, then record as unacked in a second call, lost if the worker dies or
its connection drops in between). Driven directly on two consuming channels against the real server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu.transport import virtual

from meetingtasks.core.priority import PRIORITY_ORDER, queue_name
from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.store.platform import Platform
from meetingtasks.worker.app import create_app
from meetingtasks.worker.transport import FETCH
from tests.support.waiting import wait_for


def _blocked(r: redis.Redis) -> int:
    return int(r.info("clients")["blocked_clients"])


def test_a_wake_token_pushed_with_a_message_serves_one_brpop_waiter_and_hands_the_message_to_the_other(
        platform: Platform, r: redis.Redis) -> None:
    """The server side of the claim: two clients blocked on BRPOP [wake list, queue], a producer pushes a token and
    then a message in one transaction (as every platform producer does). Redis serves the keys in the order they
    became ready: the first waiter gets the token, and the second, also blocked on the queue, pops the message."""
    wake, queue = platform.keys.wake("ai"), queue_name("ai", PRIORITY_ORDER[2])
    waiters = [redis.Redis.from_url(platform.settings.redis_url) for _ in range(2)]
    try:
        for n, w in enumerate(waiters, 1):
            w.connection = w.connection_pool.get_connection()
            w.connection.send_command("BRPOP", wake, queue, 5)
            wait_for(lambda n=n: _blocked(r) == n, message="the waiter to block")
        with r.pipeline(transaction=True) as pipe:
            pipe.lpush(wake, 1)
            pipe.lpush(queue, b"message")
            pipe.execute()
        replies = [w.parse_response(w.connection, "BRPOP") for w in waiters]
    finally:
        for w in waiters:
            w.close()
    assert [list(reply) for reply in replies] == [[wake.encode(), b"1"], [queue.encode(), b"message"]]


@pytest.fixture
def channels(platform: Platform) -> Iterator[tuple[list[Any], list[Any]]]:
    """Two consuming channels of ai's four queues, as two idle workers have them; what each delivers is recorded."""
    platform.redis("ai").script_load(FETCH.source)  # as a worker's first fetch leaves it (NOSCRIPT: an empty fetch)
    app = create_app("ai", platform.settings)
    connections = [app.connection_for_read() for _ in range(2)]
    delivered: list[Any] = []
    chans = []
    for n, conn in enumerate(connections):
        ch = conn.default_channel
        for p in PRIORITY_ORDER:
            ch.basic_consume(queue_name("ai", p), False, lambda m, n=n: delivered.append((n, m)), f"c{n}-{p.value}")
        # What kombu's poller does when it registers the channel's BRPOP with the event loop.
        ch.client.connection = ch.client.connection_pool.get_connection()
        chans.append(ch)
    yield chans, delivered
    for conn in connections:
        conn.release()


def _read(ch: Any) -> bool:
    try:
        return bool(ch._brpop_read())
    except virtual.Empty:
        return False


def test_two_idle_channels_never_pop_a_platform_message_with_plain_brpop(
        platform: Platform, r: redis.Redis, channels: tuple[list[Any], list[Any]]) -> None:
    chans, delivered = channels
    for n, ch in enumerate(chans):
        ch._mt_idle = True  # as after a fetch that found nothing: the next start waits
        ch._brpop_start()
        wait_for(lambda n=n: _blocked(r) == n + 1, message="the channel to wait")
    handle = Dispatcher(platform).dispatch("t_echo", {"tag": "woken"})  # wake token and message, atomically

    # Both waits end (or the one that has nothing keeps waiting, then times out): neither pops the message.
    results = [_read(ch) for ch in chans]
    assert results == [False, False] and delivered == [], "a waiter popped the message with BRPOP"
    assert r.llen(queue_name("ai", PRIORITY_ORDER[2])) == 1

    # The channel that took the token fetches next, atomically: the message arrives recorded by the fetch script.
    fetcher = chans[0]
    fetcher._brpop_start()
    assert _read(fetcher)
    assert [n for n, _ in delivered] == [0]
    message = delivered[0][1]
    assert message.headers["id"] == handle.id and message.headers["mt_fetch_started"] == 1
    assert r.hexists(platform.keys.unacked("ai"), message.delivery_tag)
