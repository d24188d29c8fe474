"""The delayed-set pumps a beat process runs: one loop per service, independent of the beat lock."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from meetingtasks.store.platform import Platform
from meetingtasks.worker.loops import DelayedPump

log = logging.getLogger(__name__)


class ServicePumps:
    """A :class:`DelayedPump` per service, each on its own thread and Redis client. Safe to stop twice."""

    def __init__(self, platform: Platform, services: Iterable[str] | None = None) -> None:
        """``services``: default, those the platform knows at construction (:meth:`Platform.services`); a service
        first seen later is pumped by its own workers, and by beat after its restart."""
        self.platform = platform
        self.services = tuple(platform.services() if services is None else services)
        self.pumps: list[DelayedPump] = []

    def start(self) -> ServicePumps:
        if self.pumps:
            return self
        self.pumps = [DelayedPump(self.platform, service) for service in self.services]
        for pump in self.pumps:
            pump.start()
        log.info("beat: delayed-set pump running for %s every %.2fs",
                 ", ".join(self.services), self.platform.settings.pump_interval_s)
        return self

    def stop(self) -> None:
        pumps, self.pumps = self.pumps, []
        for pump in pumps:
            pump.stop()
            pump.client.close()
