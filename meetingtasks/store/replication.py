"""Acknowledged means replicated, when asked: ``WAIT`` after the writes that accept work.

With ``min_replica_acks`` > 0, ``dispatch``, ``dispatch_batch``, the gateway's submits, ``publish_event``, the
worker's outcome writes (with their acks) and dead letters send ``WAIT min_replica_acks replica_ack_timeout_ms``
on the connection that wrote, after the writes, and look at the count before they return or go on. ``WAIT``
covers every earlier write of its own connection only, so it always rides on the same connection (a pipeline, or
the connection a single dispatch borrowed). A write Redis confirmed that way survives a failover to any of
those replicas (docs/high-availability.md).

Fewer confirmations within the timeout: producers raise :class:`~meetingtasks.core.errors.ReplicationTimeout` (the
work *is* queued on the primary; it may be lost only if the primary dies before a replica catches up), workers
log one warning and go on (the outcome stands; a lost one means a rerun under the at-least-once rule). A ``WAIT``
that Redis refuses (an ACL without it, a primary demoted since the write) is read the same way, as no
confirmation: the writes before it ran, so it never counts as their failure. Callers hand its reply, refusal
included, to :meth:`ReplicaAcks.require` or :meth:`ReplicaAcks.note` without raising it themselves.

With 0 (the default) nothing here runs:
:attr:`Platform.replica_acks <meetingtasks.store.platform.Platform>` is ``None``,
callers test ``if acks:`` (an attribute read and a test of ``None``) and send nothing more.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import ResponseError

from meetingtasks.core.errors import ReplicationTimeout
from meetingtasks.core.settings import Settings

log = logging.getLogger(__name__)


class ReplicaAcks:
    """``WAIT replicas timeout_ms`` and what to make of its answer; false when ``replicas`` is 0."""

    def __init__(self, replicas: int, timeout_ms: int) -> None:
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self.command = ("WAIT", replicas, timeout_ms)
        self._warned = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ReplicaAcks:
        return cls(settings.min_replica_acks, settings.replica_ack_timeout_ms)

    def __bool__(self) -> bool:
        return self.replicas > 0

    def execute(self, pipe: Any) -> tuple[list[Any], Any]:
        """Add the ``WAIT`` to ``pipe`` (a redis-py pipeline holding the writes it confirms) and execute it: the
        writes' replies, the first error among them raised as ``pipe.execute()`` would, and WAIT's reply as it is
        (a refusal included) for :meth:`require` or :meth:`note`."""
        pipe.execute_command(*self.command)
        *replies, acked = pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies, acked

    def reply_on(self, conn: Any) -> Any:
        """WAIT's reply read off ``conn`` (the redis-py connection it was sent on): the count, or a refusal as its
        exception, for :meth:`require` or :meth:`note`. A lost connection raises as any read does."""
        try:
            return conn.read_response()
        except ResponseError as exc:
            return exc

    def require(self, acked: Any, what: str) -> None:
        """Raise :class:`ReplicationTimeout` unless ``acked`` (WAIT's reply) reaches ``replicas``."""
        if isinstance(acked, ResponseError):
            raise ReplicationTimeout(
                f"{what}: Redis refused the WAIT for min_replica_acks={self.replicas} ({acked}); it is stored on the "
                "primary but no replica confirmed it (check the Redis user's ACL and `INFO replication`)"
            )
        if int(acked) < self.replicas:
            raise ReplicationTimeout(
                f"{what}: {int(acked)} of min_replica_acks={self.replicas} replicas confirmed within "
                f"replica_ack_timeout_ms={self.timeout_ms}; it is stored on the primary but a failover before a "
                "replica catches up would lose it (check the replicas: `INFO replication`)"
            )

    def note(self, acked: Any, what: str) -> bool:
        """For workers, which cannot undo what they wrote: log (once per streak) when ``acked`` (WAIT's reply)
        falls short or is a refusal."""
        if isinstance(acked, ResponseError):
            if not self._warned:
                log.warning("%s: Redis refused the WAIT for min_replica_acks=%d (%s); going on unconfirmed", what,
                            self.replicas, acked)
            self._warned = True
            return False
        if int(acked) >= self.replicas:
            if self._warned:
                log.info("replicas confirm the writes again")
            self._warned = False
            return True
        if not self._warned:
            log.warning("%s: %d of min_replica_acks=%d replicas confirmed within %d ms; going on", what,
                        int(acked), self.replicas, self.timeout_ms)
        self._warned = True
        return False
