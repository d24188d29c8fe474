"""Acknowledged means replicated, when asked: ``WAIT`` after the writes that accept work.

With ``min_replica_acks`` > 0, ``dispatch``, ``dispatch_batch``, the gateway's submits, ``publish_event``, the
worker's outcome writes (with their acks) and dead letters send ``WAIT min_replica_acks replica_ack_timeout_ms``
on the connection that wrote, after the writes, and look at the count before they return or go on. ``WAIT``
covers every earlier write of its own connection only, so it always rides on the same connection (a pipeline, or
the connection a single dispatch borrowed). A write Redis confirmed that way survives a failover to any of
those replicas (docs/high-availability.md).

Fewer confirmations within the timeout: producers raise :class:`~meetingtasks.core.errors.ReplicationTimeout` (the
work *is* queued on the primary; it may be lost only if the primary dies before a replica catches up), workers
log one warning and go on (the outcome stands; a lost one means a rerun under the at-least-once rule).

With 0 (the default) nothing here runs:
:attr:`Platform.replica_acks <meetingtasks.store.platform.Platform>` is ``None``,
callers test ``if acks:`` (an attribute read and a test of ``None``) and send nothing more.
"""

from __future__ import annotations

import logging
from typing import Any

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

    def queue(self, pipe: Any) -> None:
        """Add the ``WAIT`` to ``pipe`` (last, after the writes it confirms); its reply is the pipeline's last."""
        pipe.execute_command(*self.command)

    def require(self, acked: Any, what: str) -> None:
        """Raise :class:`ReplicationTimeout` unless ``acked`` (WAIT's reply) reaches ``replicas``."""
        if int(acked) < self.replicas:
            raise ReplicationTimeout(
                f"{what}: {int(acked)} of min_replica_acks={self.replicas} replicas confirmed within "
                f"replica_ack_timeout_ms={self.timeout_ms}; it is stored on the primary but a failover before a "
                "replica catches up would lose it (check the replicas: `INFO replication`)"
            )

    def note(self, acked: Any, what: str) -> bool:
        """For workers, which cannot undo what they wrote: log (once per streak) when ``acked`` falls short."""
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
