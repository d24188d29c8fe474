"""ReplyWait: a single dispatch polls for its reply for a bounded time, and stops polling for a slow Redis."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from meetingtasks.store.reply_wait import _MISSES_BEFORE_PAUSE, _PAUSE_REPLIES, ReplyWait


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
