"""Lua scripts run on Redis: where they live, how they are assembled, and how they are called.

Every script is a file ``meetingtasks/lua/<name>.lua``, loaded with :meth:`LuaScript.load`. A script starts with
a header (what it does, ``KEYS[n]`` and ``ARGV[n]`` one per line, what it returns), binds every argument to a
named local at the top, and names the shared helpers it uses in one line::

    -- prelude: record, wake

The loader prepends those prelude parts, in that order: ``record`` is generated from
:mod:`meetingtasks.store.status_schema` (the status record's one definition), ``wake`` is the generated wake-token
limit followed by ``prelude/wake.lua``, ``rollup`` is the generated constants of the traffic record
(:mod:`meetingtasks.store.rollup`) followed by ``prelude/rollup.lua``, and any other name is the hand-written
``prelude/<name>.lua``. A part may use the parts listed before it. An application keeps its own scripts in a folder
of its package (``LuaScript.load(name, directory)``) and its own prelude parts in ``<directory>/prelude/``; a part
name is the platform's or the application's, never both. ``tests/lua/`` calls every script directly on a real
Redis.

Calls: ``EVALSHA`` for direct calls, ``EVAL`` inside pipelines by default.

Inside a pipeline an ``EVALSHA`` that meets an empty script cache (Redis restarted) fails after its
neighbours already ran, and re-running the pipeline would repeat them; ``EVAL`` cannot fail that way, but
it sends the whole script every time. Pipelines whose every command is safe to run twice (the worker's
bookkeeping: guarded status transitions, HSET/ZADD/DEL) queue ``EVALSHA`` instead and run through
:func:`execute_idempotent`, which loads the scripts and runs the pipeline again after a ``NOSCRIPT``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis
from redis.exceptions import NoScriptError

from meetingtasks.store import rollup
from meetingtasks.store.replication import ReplicaAcks
from meetingtasks.store.status_schema import lua_definitions
from meetingtasks.store.wake import WAKE_TOKENS_MAX

Arg = str | bytes | int | float

SCRIPTS_DIR = Path(__file__).parent
PRELUDE_DIR = SCRIPTS_DIR / "prelude"
_PRELUDE_LINE = re.compile(r"^-- prelude: *(.*)$", re.MULTILINE)
#: Prelude parts generated from Python definitions; a part may also have a hand-written file, which follows.
_GENERATED: dict[str, Callable[[], str]] = {
    "record": lua_definitions,
    "rollup": rollup.lua_definitions,
    "wake": lambda: f"local MT_WAKE_TOKENS_MAX = {WAKE_TOKENS_MAX}\n",
}


def prelude_part(name: str, directory: Path = SCRIPTS_DIR) -> str:
    """The Lua text of one prelude part (see the module docstring) for a script of ``directory``."""
    platform_file = PRELUDE_DIR / f"{name}.lua"
    generated = _GENERATED.get(name)
    own_file = directory / "prelude" / f"{name}.lua"
    if own_file != platform_file and own_file.is_file():
        if generated is not None or platform_file.is_file():
            raise ValueError(f"Lua prelude part {name!r} is the platform's: {own_file} may not define it again")
        return own_file.read_text()
    if generated is None and not platform_file.is_file():
        places = platform_file if own_file == platform_file else f"{platform_file} or {own_file}"
        raise ValueError(f"unknown Lua prelude part {name!r}: no generator and no {places}")
    return (generated() if generated else "") + (platform_file.read_text() if platform_file.is_file() else "")


def prelude_names(text: str) -> list[str]:
    """The prelude parts a script's text names in its ``-- prelude:`` line, in order."""
    found = _PRELUDE_LINE.search(text)
    return [p.strip() for p in found.group(1).split(",") if p.strip()] if found else []


def script_source(name: str, directory: Path = SCRIPTS_DIR) -> str:
    """The full source of script ``name``: its prelude parts, then ``<directory>/<name>.lua`` itself."""
    text = (directory / f"{name}.lua").read_text()
    return "".join(prelude_part(part, directory) for part in prelude_names(text)) + text


class LuaScript:
    def __init__(self, source: str, name: str = "") -> None:
        self.source = source
        self.name = name
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    @classmethod
    def load(cls, name: str, directory: Path = SCRIPTS_DIR) -> LuaScript:
        """The script in ``meetingtasks/lua/<name>.lua`` with its prelude parts. An application package keeps its
        own scripts beside its code and passes their ``directory``; its scripts may name the platform's prelude
        parts and its own (``<directory>/prelude/``)."""
        return cls(script_source(name, directory), name)

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
    :class:`~meetingtasks.store.replication.ReplicaAcks` and what to do with the count), a ``WAIT`` ends the
    pipeline."""
    for attempt in (1, 2):
        with client.pipeline(transaction=False) as pipe:
            build(pipe)
            scripts = _queued_by_sha.pop(id(pipe), [])
            try:
                if replicated is None:
                    return list(pipe.execute())
                acks, check = replicated
                replies, acked = acks.execute(pipe)
                check(acked)
                return replies
            except NoScriptError:
                if attempt == 2:
                    raise
                for script in scripts:
                    client.script_load(script.source)
    raise AssertionError("unreachable")
