"""Lua scripts run on Redis: ``EVALSHA`` for direct calls, ``EVAL`` inside pipelines.

Inside a pipeline an ``EVALSHA`` that meets an empty script cache (Redis restarted) fails after its
neighbours already ran, and re-running the pipeline would repeat them; ``EVAL`` cannot fail that way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import NoScriptError

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

    def queue(self, pipe: redis.client.Pipeline, keys: Sequence[Arg], args: Sequence[Arg] = ()) -> None:
        """Add this script to ``pipe``; its reply lands in the pipeline's results."""
        pipe.eval(self.source, len(keys), *keys, *args)
