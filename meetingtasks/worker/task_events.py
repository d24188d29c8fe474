"""Celery's task events (what Flower and ``celery events`` show) are sent only while someone receives them.

A worker sends three task events per task (received, started, succeeded). Buffered and published in batches (see
:class:`~meetingtasks.worker.consumer.PlatformConsumer`), building and encoding them still costs a quick task
about a tenth of its worker CPU, and Redis pub/sub keeps nothing for a subscriber that comes later: with no
monitor subscribed, that work reaches nobody. So the worker keeps track of whether anyone receives them:

* every publish of task events returns how many subscribers received it; when none did, task events stop (the
  worker's own events, heartbeats included, go on: who receives those, another worker's gossip for one, says
  nothing of who wants task events);
* while they are stopped, a fetch publishes an empty batch from inside the fetch script (a no-op for Celery's
  ``EventReceiver``, and so for Flower) and hands back how many received it, at most every
  :data:`PROBE_INTERVAL_S` (a busy prefork worker fetches several hundred times a second): so every task fetched
  from that long after a monitor subscribed is seen from its task-received on, as with events always on (an idle
  worker's next fetch probes at once).

Celery's own switch (``celery control enable_events``/``disable_events``, which Flower sends) still decides
whether task events are sent at all; this only skips them when nobody would receive them. Only the process that
fetches keeps track: a prefork pool's children (which never fetch, so never probe) send what they send as before.
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any

from celery.app.events import Events
from celery.events.dispatcher import EventDispatcher

#: The routing key of a batch of task events (Celery's dispatcher publishes group "task" as "task.multi").
BATCH_ROUTING_KEY = "task.multi"
#: How often, at most, a fetch asks whether a monitor has subscribed while task events are stopped.
PROBE_INTERVAL_S = 0.1


class TaskEventListeners:
    """Whether the last word from Redis said someone receives this process's task events; see the module doc."""

    def __init__(self) -> None:
        #: Until a publish or a probe says otherwise, task events are sent (as Celery does).
        self.present = True
        self._tracking = True
        self._probed_at = -PROBE_INTERVAL_S
        #: The events exchange's name (set by the dispatcher): publishes on it report their receivers.
        self.exchange: str | None = None
        #: (topic, message) of an empty batch, built from the worker's first events message (see :meth:`learn`).
        self._probe: tuple[str, bytes] | None = None

    def heard(self, receivers: int) -> None:
        """A publish of task events (or a fetch's probe) reached ``receivers`` subscribers."""
        if self._tracking:
            self.present = receivers > 0

    def stop_tracking(self) -> None:
        """Send task events from now on whoever receives them: in a forked pool child, which never probes."""
        self._tracking = False
        self.present = True

    def probe(self) -> tuple[str, bytes] | None:
        """The empty batch a fetch should publish now: while task events are stopped, at most every
        :data:`PROBE_INTERVAL_S`."""
        if self.present or self._probe is None:
            return None
        now = time.monotonic()
        if now - self._probed_at < PROBE_INTERVAL_S:
            return None
        self._probed_at = now
        return self._probe

    def learn(self, exchange: str, message: dict[str, Any], topic: str, encode: Any) -> None:
        """Build the probe from an events message this process publishes (its envelope, with an empty batch for a
        body), once: a message of the worker's own connection and serializer, so every receiver can decode it.
        ``encode`` is the channel's body encoder (``Channel.encode_body``)."""
        if self._probe is not None or exchange != self.exchange:
            return
        from meetingtasks.core import kombu_json

        probe = copy.deepcopy(message)
        props = probe.setdefault("properties", {})
        probe["body"], props["body_encoding"] = encode("[]", props.get("body_encoding"))
        probe["content-type"] = "application/json"
        props.setdefault("delivery_info", {})["routing_key"] = BATCH_ROUTING_KEY
        self._probe = (topic, kombu_json.dumps(probe).encode())


#: This process's view (a worker process has one consuming channel and one event dispatcher).
LISTENERS = TaskEventListeners()
os.register_at_fork(after_in_child=LISTENERS.stop_tracking)


class GatedEventDispatcher(EventDispatcher):  # type: ignore[misc]
    """Celery's event dispatcher, except that task events are skipped while nobody receives them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        LISTENERS.exchange = self.exchange.name

    def send(self, type: str, *args: Any, **fields: Any) -> Any:
        if not LISTENERS.present and type.startswith("task-"):
            return None
        return super().send(type, *args, **fields)


class TaskEvents(Events):  # type: ignore[misc]
    """The worker app's ``app.events``, whose dispatcher is :class:`GatedEventDispatcher`."""

    dispatcher_cls = f"{__name__}:GatedEventDispatcher"
