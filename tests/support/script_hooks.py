"""Faults injected at one exact point of a producer: just before a Lua script call leaves this process.

The hook runs inside redis-py's ``send_packed_command``, on the connection that is about to send an ``EVAL``
or ``EVALSHA``, so a test can make Redis refuse or lose *that* call (a maxmemory window, a killed
connection, a restart) while every command sent before it went through as usual. Nothing of Redis is faked:
the hook only changes the real server's state, or stops the process, at a deterministic moment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

#: ``hook(connection)``: called once, with the redis-py connection about to send the script call.
Hook = Callable[[Any], None]


class ProducerCrashed(BaseException):  # a BaseException: a crash is not an error the code handles
    """Raised by a hook to stop the producer at that point, as a crash (or a kill -9) would."""


def _is_script_call(command: Any, match: bytes) -> bool:
    chunks = command if isinstance(command, list | tuple) else [command]
    packed = b"".join(bytes(c) for c in chunks)
    return b"EVAL" in packed[:64].upper() and match in packed


@contextmanager
def before_script_call(monkeypatch: pytest.MonkeyPatch, hook: Hook, *, times: int = 1,
                       match: bytes = b"") -> Iterator[list[int]]:
    """Run ``hook`` before each of the next ``times`` script calls (that contain ``match``) any client of this
    process sends; yields a one-item list holding how many times it ran."""
    real_send = redis.connection.AbstractConnection.send_packed_command
    ran = [0]

    def send(self: Any, command: Any, check_health: bool = True) -> None:
        if ran[0] < times and _is_script_call(command, match):
            ran[0] += 1
            hook(self)
        real_send(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", send)
    try:
        yield ran
    finally:
        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", real_send)


def open_oom_window(admin: redis.Redis) -> Callable[[], None]:
    """Start refusing writes (``maxmemory 1``, ``noeviction``); returns the function that ends the window."""
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)
    return lambda: admin.config_set("maxmemory", 0)
