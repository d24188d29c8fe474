"""Wake tokens: how producers tell a service's idle workers that work is queued.

An idle worker waits with ``BRPOP`` on its service's wake list (and on the queues themselves, for foreign
producers). Every platform producer pushes a token *before* its messages, in the same transaction or Lua
call, so the waiting worker is woken by the token and then takes the messages with its atomic fetch
instead of popping one with ``BRPOP`` (see :mod:`meetingtasks.worker.transport`).
"""

from __future__ import annotations

from typing import Any

from meetingtasks.store.keys import Keys

#: Tokens kept at most in a wake list: enough to wake every idle worker of a service at once. Scripts that queue
#: work push their tokens with ``mt_wake`` (lua/prelude/wake.lua), which gets this limit as ``MT_WAKE_TOKENS_MAX``.
WAKE_TOKENS_MAX = 64

def push_wake(pipe: Any, keys: Keys, service: str, count: int = 1) -> None:
    """Queue ``count`` wake tokens (at most :data:`WAKE_TOKENS_MAX`) for ``service`` on ``pipe``."""
    count = min(count, WAKE_TOKENS_MAX)
    if count <= 0:
        return
    pipe.lpush(keys.wake(service), *([1] * count))
    pipe.ltrim(keys.wake(service), 0, WAKE_TOKENS_MAX - 1)
