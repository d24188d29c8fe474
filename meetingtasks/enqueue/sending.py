"""Sending: the one way new tasks reach Redis, whichever public call queued them.

``dispatch``, ``dispatch_each`` and ``dispatch_batch`` hand :meth:`Sender.send` the same two things per Redis
server: runs of tasks due now (for the enqueue script) and the tasks that go by the plain commands (delayed
ones, odd names), plus any commands that must go first (a batch's record). It sends them through
:func:`meetingtasks.store.resp.exchange` on one connection: packed by the one encoder, read in one go, confirmed by
``WAIT`` with ``min_replica_acks``, and retried by :meth:`Sender.retrying` while Redis refuses connections.
A dispatch with ``dedup_key`` goes the same way as one claim-and-enqueue script call (:meth:`Sender.once`).

The fast path, labelled: a lone script call (a single dispatch, a gateway submit of one task) goes as
``EVALSHA`` and polls for its reply (:mod:`meetingtasks.store.reply_wait`); the dispatch loop of ``python -m bench``
measures it. Anything larger streams ``EVAL`` calls, one per :data:`~meetingtasks.enqueue.commands.BATCH_CHUNK`
tasks, each sent as soon as it is built while Redis runs the previous one; ``EVAL`` because, among several
calls, a ``NOSCRIPT`` could not be answered by sending one again (the calls after it ran already).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.exceptions import ReadOnlyError
from redis.sentinel import MasterNotFoundError

from meetingtasks.core.errors import BrokerUnavailable
from meetingtasks.core.sentinel import is_sentinel
from meetingtasks.enqueue.commands import (
    BATCH_CHUNK,
    ENQUEUE_MANY,
    ENQUEUE_ONCE,
    Runs,
    commands_of,
    enqueue,
    script_args,
    script_keys,
)
from meetingtasks.enqueue.prepare import PreparedTask
from meetingtasks.lua import Arg
from meetingtasks.store.dedup import claim_command, claim_outcome
from meetingtasks.store.platform import Platform
from meetingtasks.store.resp import Command, exchange

#: Errors of a request that never reached Redis, or that Redis refused whole: safe to send again.
NOT_SENT = (MasterNotFoundError, ReadOnlyError)
_T = TypeVar("_T")


class Sender:
    """Sends prepared tasks for ``platform``."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def send(self, client: redis.Redis, runs: Runs, single: Sequence[PreparedTask] = (), *,
             common: Mapping[str, str] | None = None, first: Sequence[Command] = (), what: str = "dispatch") -> None:
        """Queue ``runs`` and ``single`` (each with the status fields ``common``) after the ``first`` commands, in
        one exchange with ``client``'s server. Raises :class:`BrokerUnavailable` as :meth:`retrying` says."""
        p = self.platform
        common = dict(common or {})
        head = list(first)
        if single:
            def build(pipe: Any) -> None:
                for task in single:
                    enqueue(p, pipe, replace(task, fields={**common, **task.fields}) if common else task)

            head += commands_of(client, build)
        if not head and not runs.count:
            return
        keys = script_keys(p)
        if not head and runs.count <= BATCH_CHUNK:
            [args] = script_args(p, runs, common)
            lone = [[("EVALSHA", ENQUEUE_MANY.sha, len(keys), *keys, *args)]]
            scripts = {ENQUEUE_MANY.sha: ENQUEUE_MANY.source}
            self.retrying(lambda: exchange(client, lone, acks=p.replica_acks, what=what, reply_wait=p.reply_wait,
                                           scripts=scripts))
        else:
            self.retrying(lambda: exchange(client, _stream(head, keys, script_args(p, runs, common)),
                                           acks=p.replica_acks, what=what))

    def once(self, client: redis.Redis, task: PreparedTask, dedup_key: str) -> str:
        """Claim ``dedup_key`` and queue ``task`` in one script call (:mod:`meetingtasks.store.dedup`); the id of the
        task holding the key. The call is safe to send again, so a connection lost mid-call is retried like a
        refused one."""
        p = self.platform
        commands = commands_of(client, lambda pipe: enqueue(p, pipe, task))
        command = claim_command(ENQUEUE_ONCE, p.keys.dedup(dedup_key), task.task_id, p.settings.dedup_ttl_s,
                                p.keys.status(""), commands)
        scripts = {ENQUEUE_ONCE.sha: ENQUEUE_ONCE.source}
        [reply] = self.retrying(lambda: exchange(client, [[command]], acks=p.replica_acks, what="dispatch",
                                                 reply_wait=p.reply_wait, scripts=scripts), resend=True)
        owner, _queued = claim_outcome(reply)
        return owner

    def retrying(self, call: Callable[[], _T], *, resend: bool = False) -> _T:
        """Run ``call`` (one request to Redis); while Redis refuses connections, keep trying for
        ``dispatch_retry_s`` (nothing was sent, so nothing can be queued twice), then raise
        :class:`BrokerUnavailable`. A connection lost mid-request is not retried, the task may be queued,
        unless ``resend`` says that running ``call`` twice queues nothing twice."""
        settings = self.platform.settings
        deadline = time.monotonic() + settings.dispatch_retry_s
        pause = 0.05
        sent = False  # whether a call may have reached Redis
        while True:
            try:
                return call()
            except (redis.ConnectionError, redis.TimeoutError, ReadOnlyError) as exc:
                where = _redacted(settings.broker_url())
                if isinstance(exc, ReadOnlyError) and not is_sentinel(where):
                    raise  # a replica where a primary was configured: nothing will change it by itself
                # Not sent: no connection (no primary named by the sentinels yet, or refused), or a demoted primary's
                # refusal (its connection now asks the sentinels again).
                if not isinstance(exc, NOT_SENT) and "connecting to" not in str(exc):
                    sent = True
                    if not resend:
                        raise BrokerUnavailable(
                            f"lost the connection to Redis at {where} while queuing ({exc}); the task may or may "
                            "not be queued: check with `meetingtasks status ID`"
                        ) from None
                if time.monotonic() >= deadline:
                    outcome = ("the task may or may not be queued: dispatching again with the same dedup_key is safe"
                               if sent else "nothing was queued")
                    raise BrokerUnavailable(
                        f"cannot reach Redis at {where} ({exc}); {outcome} "
                        f"(tried for dispatch_retry_s={settings.dispatch_retry_s}s)"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 1.0)


def _stream(head: list[Command], keys: list[str], calls: Iterable[list[Arg]]) -> Iterator[list[Command]]:
    """The groups to send: ``head`` with the first script call, then each further call alone."""
    group = list(head)
    for args in calls:
        group.append(("EVAL", ENQUEUE_MANY.source, len(keys), *keys, *args))
        yield group
        group = []
    if group:
        yield group


def _redacted(url: str) -> str:
    """``url`` without its password, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
