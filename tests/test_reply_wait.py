"""ReplyWait: a single dispatch, and a solo worker's Redis calls, poll for the reply for a bounded time, and stop
polling for a slow Redis."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.store.platform import Platform
from meetingtasks.store.reply_wait import _MISSES_BEFORE_PAUSE, _PAUSE_REPLIES, ReplyWait
from meetingtasks.store.status import Status
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess


@dataclass
class _Connection:
    _sock: socket.socket


def test_returns_as_soon_as_the_reply_is_readable() -> None:
    ours, redis_side = socket.socketpair()
    with ours, redis_side:
        wait = ReplyWait(budget_us=10_000)  # the largest budget the setting allows
        redis_side.sendall(b"+OK\r\n")
        started = time.perf_counter()
        wait.before_read(_Connection(ours))
        assert time.perf_counter() - started < wait.budget_s
        assert ours.recv(16) == b"+OK\r\n"  # polling did not consume the reply


def test_stops_polling_after_replies_slower_than_the_budget() -> None:
    ours, redis_side = socket.socketpair()
    with ours, redis_side:
        wait = ReplyWait(budget_us=200)
        for _ in range(_MISSES_BEFORE_PAUSE):
            started = time.perf_counter()
            wait.before_read(_Connection(ours))  # nothing arrives: polls for the whole budget
            assert time.perf_counter() - started >= wait.budget_s
        assert wait._paused == _PAUSE_REPLIES
        wait.before_read(_Connection(ours))
        assert wait._paused == _PAUSE_REPLIES - 1


def test_a_fast_reply_resets_the_misses() -> None:
    ours, redis_side = socket.socketpair()
    with ours, redis_side:
        wait = ReplyWait(budget_us=200)
        for _ in range(_MISSES_BEFORE_PAUSE - 1):
            wait.before_read(_Connection(ours))
        redis_side.sendall(b"+OK\r\n")
        wait.before_read(_Connection(ours))
        ours.recv(16)
        for _ in range(_MISSES_BEFORE_PAUSE - 1):
            wait.before_read(_Connection(ours))
        assert wait._paused == 0


def test_zero_budget_and_tls_sockets_never_poll() -> None:
    class _NotPlain:  # what an ssl.SSLSocket is to the check: not a plain socket
        def fileno(self) -> int:
            raise AssertionError("polled a TLS socket")

    wait = ReplyWait(budget_us=200)
    wait.before_read(_Connection(_NotPlain()))  # type: ignore[arg-type]
    never = ReplyWait(budget_us=0)
    never.before_read(_Connection(_NotPlain()))  # type: ignore[arg-type]
    assert wait._misses == 0 and never._misses == 0


@pytest.mark.slow
@pytest.mark.parametrize(("pool", "polls"), [("solo", True), ("prefork", False), ("threads", False)])
def test_only_a_solo_workers_redis_calls_poll_for_their_replies(
        platform: Platform, start_worker: Callable[..., WorkerProcess], pool: str, polls: bool) -> None:
    # A solo worker's one thread has nothing else to run while a task's Redis call waits; a prefork or threads
    # worker's other processes and threads need the CPU that polling would take.
    start_worker("ai", "--pool", pool, "--concurrency", "1")
    handle = Dispatcher(platform).dispatch("t_reply_polling", {"tag": pool})
    wait_for(lambda: handle.status() == Status.SUCCEEDED, message="the task to run")
    assert handle.info().result == {"polls": polls}
