"""The Redis protocol as the platform writes it: one encoder and one request/reply exchange.

Every command the platform sends is packed by :func:`pack_command`, which is hiredis's packer: the dispatcher's
paths through :func:`exchange`, the worker's fetch (``worker/transport.py``), and redis-py itself, whose
connections pack with the same ``hiredis.pack_command`` when hiredis is installed (``HiredisRespSerializer``, a
dependency of this package). So a value (bytes, unicode, a big int, a float, an empty string) reaches Redis as
the same bytes whichever path carries it; ``tests/test_resp.py`` checks that against a real redis-server.

Why hiredis: it packs a single dispatch's script call (17 short arguments) in about 5 us where Python code takes
14, and an enqueue script call carrying 500 messages in about 0.85 ms where Python code takes 1.3 (hiredis 3.5,
the 2-core VM of ``python -m bench``). It writes a float as ``repr`` does, as redis-py's own encoder would, and
refuses ``bool`` and ``None`` (:class:`TypeError`), as redis-py does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import hiredis
import redis
from redis.exceptions import NoScriptError, ReadOnlyError

from meetingtasks.core.errors import ReplicationTimeout
from meetingtasks.lua import Arg
from meetingtasks.store.replication import ReplicaAcks
from meetingtasks.store.reply_wait import ReplyWait

Command = Sequence[Arg]


def pack_command(command: Command) -> bytes:
    """``command`` (name and arguments) in the Redis protocol; :class:`TypeError` naming any other value."""
    try:
        return hiredis.pack_command(tuple(command))  # type: ignore[arg-type, no-any-return]  # stub: a 1-tuple
    except TypeError:
        bad = next((arg for arg in command if type(arg) not in (str, bytes, int, float)), None)
        raise TypeError(f"cannot send a {type(bad).__name__} to Redis: {bad!r} (in {str(command[0])!r})") from None


def pack(commands: Iterable[Command]) -> bytes:
    """Several commands, one after the other, as one write."""
    return b"".join([pack_command(command) for command in commands])


def exchange(client: redis.Redis, calls: Iterable[Sequence[Command]], *, acks: ReplicaAcks | None = None,
             what: str = "write", reply_wait: ReplyWait | None = None,
             scripts: Mapping[str, str] | None = None) -> list[Any]:
    """Send each group of ``calls`` on one connection of ``client``'s pool as soon as it is built (so the caller
    builds the next group while Redis runs the previous one), then read every reply; the replies, in order.

    With ``acks``, a ``WAIT`` follows the last command on the same connection and its count is required
    (:class:`~meetingtasks.core.errors.ReplicationTimeout`, ``what`` names the request). ``reply_wait`` polls for
    the first reply (a lone short request, see :mod:`meetingtasks.store.reply_wait`). An ``EVALSHA`` answered
    ``NOSCRIPT`` did not run: it goes again as ``EVAL`` of its source from ``scripts`` (sha -> source); only a
    lone script call should rely on that, as the commands after it ran before it. An error reply is raised once
    every reply is read (the commands before and after it ran); a connection that may hold unread replies is
    closed, never reused."""
    pool = client.connection_pool
    conn: Any = pool.get_connection()  # redis-py's Connection methods are untyped
    try:
        sent: list[Command] = []
        for group in calls:
            # Only the first send may run redis-py's health check: its PING, sent with replies outstanding, would
            # read the reply of an earlier group as its PONG.
            conn.send_packed_command([pack(group)], check_health=not sent)
            sent += group
        replies = _read(conn, sent, acks, what, reply_wait)
        if scripts:
            again = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)
                     and str(sent[i][0]).upper() == "EVALSHA" and str(sent[i][1]) in scripts]
            if again:
                resend = [("EVAL", scripts[str(sent[i][1])], *sent[i][2:]) for i in again]
                conn.send_packed_command([pack(resend)])
                for i, reply in zip(again, _read(conn, resend, acks, what, None), strict=True):
                    replies[i] = reply
    except (ReplicationTimeout, redis.ResponseError):
        raise  # every reply was read: the connection is fine
    except BaseException:
        conn.disconnect()  # replies may be left unread: the connection cannot be reused
        raise
    finally:
        pool.release(conn)
    for reply in replies:
        if isinstance(reply, redis.ResponseError):
            raise reply
    return replies


def _read(conn: Any, sent: Sequence[Command], acks: ReplicaAcks | None, what: str,
          reply_wait: ReplyWait | None) -> list[Any]:
    """The replies to ``sent`` (an error reply as its exception), then, with ``acks``, WAIT's count required."""
    if acks:
        conn.send_packed_command([pack_command(acks.command)], check_health=False)  # replies are outstanding
    if reply_wait is not None:
        reply_wait.before_read(conn)
    replies: list[Any] = []
    for _ in sent:
        try:
            replies.append(conn.read_response())
        except ReadOnlyError:
            # A replica (or a primary just demoted) refuses the writes: the replies left unread are refusals too.
            # Raised at once, for the caller to retry once the sentinels name the new primary.
            conn.disconnect()
            raise
        except redis.ResponseError as exc:
            replies.append(exc)
    if acks:
        acked = acks.reply_on(conn)
        if not any(isinstance(reply, redis.ResponseError) for reply in replies):
            acks.require(acked, what)
    return replies
