"""De-duplication keys: a dispatch with ``dedup_key`` claims the key and queues its task in one Lua call.

``P dedup:<key>`` holds the id of the task that owns the key, for ``dedup_ttl_s``. The claim and the enqueue
(status record, deadline, push or delayed entry) run in one script, so there is no moment at which the key
is held by a task that was never queued: a producer that crashes, loses its connection or meets a Redis
that refuses writes (OOM, READONLY) before the call ran leaves nothing behind, and a later dispatch with the
same key queues a real task. A call whose reply was lost may be sent again: if it ran, the key names this
task and the second call queues nothing.

The key is also released when the task it names has no status record any more (expired before the key,
e.g. with ``status_ttl_s`` < ``dedup_ttl_s``, or deleted by an operator): returning a handle to a task no one
can look up is the phantom this module exists to prevent, so the next dispatch queues a new task. A key left
by something that is not this script (an older producer's two-step claim) is healed the same way.

The script runs the commands of :meth:`Dispatcher.enqueue <meetingtasks.enqueue.dispatcher.Dispatcher.enqueue>` as
the dispatcher built them for a pipeline; a script call among them (the status transition) runs the embedded
copy of that script, since a Lua script cannot call ``EVAL``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis

from meetingtasks.lua import Arg, LuaScript, script_source
from meetingtasks.store.replication import ReplicaAcks


def claim_and_enqueue_script(*scripts: LuaScript) -> LuaScript:
    """The claim-and-enqueue script, able to run ``scripts`` among the enqueue's commands. Each is embedded
    as a function whose parameters ``KEYS`` and ``ARGV`` shadow the globals, so its source runs unchanged."""
    parts = ["local embedded = {}\n"]
    for script in scripts:
        parts.append(f"embedded['{script.sha}'] = function(KEYS, ARGV)\n{script.source}\nend\n")
    return LuaScript("".join(parts) + script_source("claim_and_enqueue"), "claim_and_enqueue")


def flatten(commands: Sequence[Sequence[Any]]) -> list[Arg]:
    """``commands`` (as a redis-py pipeline's command stack holds them) as the script's ARGV tail; an ``EVAL``
    becomes ``EVALSHA`` of its source, which the script must embed."""
    out: list[Arg] = []
    for command in commands:
        name = str(command[0]).upper()
        if name == "EVAL":
            command = ("EVALSHA", hashlib.sha1(_text(command[1]).encode()).hexdigest(), *command[2:])
        out.append(len(command))
        out.extend(command)
    return out


def claim_command(script: LuaScript, dedup_key: str, task_id: str, ttl_s: int, status_prefix: str,
                  commands: Sequence[Sequence[Any]]) -> tuple[Arg, ...]:
    """The call of ``script`` (from :func:`claim_and_enqueue_script`) that claims ``dedup_key`` for ``task_id`` and runs
    ``commands``, as ``EVALSHA`` (its reply goes to :func:`claim_outcome`)."""
    return ("EVALSHA", script.sha, 1, dedup_key, task_id, ttl_s, status_prefix, *flatten(commands))


def claim_outcome(reply: Any) -> tuple[str, bool]:
    """``(owner id, whether this call queued the task)`` from the script's reply."""
    fields = {_text(name): value for name, value in zip(reply[::2], reply[1::2], strict=True)}
    return _text(fields["owner"]), bool(int(fields["queued"]))


def claim_and_enqueue(script: LuaScript, client: redis.Redis, dedup_key: str, task_id: str, ttl_s: int,
                      status_prefix: str, commands: Sequence[Sequence[Any]],
                      acks: ReplicaAcks | None = None) -> tuple[str, bool]:
    """Run ``script`` (from :func:`claim_and_enqueue_script`) through redis-py: ``(owner id, whether this call
    queued the task)``; with ``acks``, confirmed by replicas (see :mod:`meetingtasks.store.replication`) on the same
    connection.
    (The dispatcher sends :func:`claim_command` itself, see :mod:`meetingtasks.enqueue.sending`.)"""
    args = [task_id, ttl_s, status_prefix, *flatten(commands)]
    if acks:
        with client.pipeline(transaction=False) as pipe:
            script.queue(pipe, [dedup_key], args)
            [reply], acked = acks.execute(pipe)
        acks.require(acked, "dispatch")
    else:
        reply = script(client, [dedup_key], args)
    return claim_outcome(reply)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
