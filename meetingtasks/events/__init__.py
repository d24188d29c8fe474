"""Events: durable channels with live pub/sub, subscriptions that turn events into tasks, the bridge that
runs them, live subscribers and the in-process event bus.

- :func:`publish_event` / :func:`publish_events`: append to the channel's stream and announce on its
  pub/sub channel in one round trip (:mod:`.publisher`); the :class:`Event` envelope (:mod:`.envelope`);
  the channel table, filled by :func:`channel` (:mod:`.channels`).
- :func:`on_event`: declare a subscription (:mod:`.subscriptions`); :class:`Bridge` runs them (:mod:`.bridge`).
- :class:`LiveSubscriber` / :class:`AsyncLiveSubscriber`: in-process listeners of any pub/sub channel
  that reconnect and resubscribe by themselves (:mod:`.live`).
- :class:`LocalBus` and :func:`on` / :func:`off` / :func:`emit`: the in-process event bus (:mod:`.bus`).
"""

from meetingtasks.events.bus import LocalBus, emit, off, on
from meetingtasks.events.channels import CHANNELS, OWNERS, channel
from meetingtasks.events.envelope import Event
from meetingtasks.events.live import AsyncLiveSubscriber, LiveMessage, LiveSubscriber
from meetingtasks.events.publisher import EventPublisher, publish_event, publish_events
from meetingtasks.events.subscriptions import SUBSCRIPTIONS, Subscription, on_event

__all__ = [
    "CHANNELS",
    "OWNERS",
    "SUBSCRIPTIONS",
    "AsyncLiveSubscriber",
    "Event",
    "EventPublisher",
    "LiveMessage",
    "LiveSubscriber",
    "LocalBus",
    "Subscription",
    "channel",
    "emit",
    "off",
    "on",
    "on_event",
    "publish_event",
    "publish_events",
]
