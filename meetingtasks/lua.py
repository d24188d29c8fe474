"""Lua scripts run on Redis: ``EVALSHA`` for direct calls, ``EVAL`` inside pipelines by default.

Inside a pipeline an ``EVALSHA`` that meets an empty script cache (Redis restarted) fails after its
neighbours already ran, and re-running the pipeline would repeat them; ``EVAL`` cannot fail that way, but
it sends the whole script every time. Pipelines whose every command is safe to run twice (the worker's
bookkeeping: guarded status transitions, HSET/ZADD/DEL) queue ``EVALSHA`` instead and run through
:func:`execute_idempotent`, which loads the scripts and runs the pipeline again after a ``NOSCRIPT``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.exceptions import NoScriptError

from meetingtasks.replication import ReplicaAcks

Arg = str | bytes | int | float


class LuaScript:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, client: redis.Redis, keys: Sequence[Arg], args: Sequence[Arg] = ()) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return client.eval(self.source, len(keys), *keys, *args)

    def queue(self, pipe: redis.client.Pipeline, keys: Sequence[Arg], args: Sequence[Arg] = (),
              *, by_sha: bool = False) -> None:
        """Add this script to ``pipe``; its reply lands in the pipeline's results. ``by_sha`` only in pipelines
        run by :func:`execute_idempotent`."""
        if by_sha:
            pipe.evalsha(self.sha, len(keys), *keys, *args)
            _queued_by_sha.setdefault(id(pipe), []).append(self)
        else:
            pipe.eval(self.source, len(keys), *keys, *args)


_queued_by_sha: dict[int, list[LuaScript]] = {}


def execute_idempotent(client: redis.Redis, build: Callable[[redis.client.Pipeline], object],
                       replicated: tuple[ReplicaAcks, Callable[[Any], object]] | None = None) -> list[Any]:
    """Build and execute a pipeline of commands that are all safe to run twice; after a ``NOSCRIPT`` (the
    server lost its script cache) load the scripts and run it once more. With ``replicated`` (the platform's
    :class:`~meetingtasks.replication.ReplicaAcks` and what to do with the count), a ``WAIT`` ends the pipeline."""
    for attempt in (1, 2):
        with client.pipeline(transaction=False) as pipe:
            build(pipe)
            scripts = _queued_by_sha.pop(id(pipe), [])
            try:
                if replicated is None:
                    return list(pipe.execute())
                acks, check = replicated
                acks.queue(pipe)
                *replies, acked = pipe.execute()
                check(acked)
                return replies
            except NoScriptError:
                if attempt == 2:
                    raise
                for script in scripts:
                    client.script_load(script.source)
    raise AssertionError("unreachable")

