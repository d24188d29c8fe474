"""Publishing: an event goes to its channel's stream (durable, read by the bridge) and to the pub/sub
channel of the same name (live listeners), in one Redis round trip.

Both happen in one Lua call that first records the event id (``Keys.event_id``, kept ``event_id_ttl_s``):
publishing the same :class:`Event` twice (a retry after a lost reply) appends and announces it once, and
the bridge uses the same call to append what outside services ``PUBLISH`` without a second copy.
Appends never trim: an entry leaves its stream once every consumer group has acknowledged it
(:mod:`meetingtasks.events.retention`, run by the ``maintenance_trim_streams`` job).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from time import monotonic, sleep
from typing import Any, TypeVar

import redis
from redis.exceptions import ReadOnlyError

from meetingtasks.core import tracing
from meetingtasks.core.errors import InvalidEvent
from meetingtasks.core.sentinel import is_sentinel
from meetingtasks.events.envelope import Event, build_event, encode_payload
from meetingtasks.lua import LuaScript
from meetingtasks.store.platform import Platform, get_platform

_T = TypeVar("_T")

#: Appends an event once per id and announces it (lua/append_event.lua).
APPEND = LuaScript.load("append_event")

EventLike = Event | Mapping[str, Any]


class EventPublisher:
    """Appends and announces events on the platform's (global) Redis."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def make(
        self,
        channel: str,
        event_type: str,
        payload: Any = None,
        *,
        source: str,
        event_id: str | None = None,
        time: float | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> Event:
        """A validated event; :class:`InvalidEvent` (or a subclass) names what is wrong."""
        data: dict[str, Any] = {"channel": channel, "type": event_type, "source": source,
                                "payload": encode_payload(payload)}
        if event_id is not None:
            data["id"] = event_id
        if time is not None:
            data["time"] = time
        # The tracing layer fills this carrier (W3C traceparent/tracestate) when a trace is current.
        data["trace"] = dict(trace or tracing.event_trace(channel, event_type, event_id or ""))
        return build_event(data)

    def encode(self, event: Event) -> bytes:
        """The JSON of ``event``, or :class:`InvalidEvent` when it is over ``max_message_bytes``."""
        body = event.to_json()
        limit = self.platform.settings.max_message_bytes
        if len(body) > limit:
            raise InvalidEvent(
                f"invalid event: {event.type} is {len(body)} bytes, over max_message_bytes={limit}; "
                "pass large data by reference"
            )
        return body

    def _args(self, event: Event, *, announce: bool) -> tuple[list[str], list[Any]]:
        body = self.encode(event)
        keys = self.platform.keys
        channel = keys.event_channel(event.channel) if announce else ""
        settings = self.platform.settings
        return ([keys.event_id(event.id), keys.event_stream(event.channel)],
                [settings.event_id_ttl_s, body, channel])

    def queue(self, pipe: redis.client.Pipeline, event: Event, *, announce: bool = True) -> None:
        """Add the append (and pub/sub announcement) of ``event`` to ``pipe``; its reply is the entry id."""
        APPEND.queue(pipe, *self._args(event, announce=announce))

    def append(self, client: redis.Redis, event: Event, *, announce: bool = True) -> str | None:
        """Append ``event`` now; the stream entry id, or ``None`` when its id was already appended."""
        entry = APPEND(client, *self._args(event, announce=announce))
        return _text(entry) if entry else None

    def publish(
        self,
        channel: str,
        event_type: str,
        payload: Any = None,
        *,
        source: str,
        event_id: str | None = None,
        time: float | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> Event:
        event = self.make(channel, event_type, payload, source=source, event_id=event_id, time=time, trace=trace)
        acks = self.platform.replica_acks
        if not acks:
            self._resending(lambda: self.append(self.platform.redis(), event))
            return event

        def send() -> Any:
            with self.platform.redis().pipeline(transaction=False) as pipe:
                self.queue(pipe, event)
                _replies, acked = acks.execute(pipe)
                return acked

        acks.require(self._resending(send), f"publish_event {channel}/{event_type}")
        return event

    def _resending(self, send: Callable[[], _T]) -> _T:
        """Run ``send`` again while the connection fails, for ``dispatch_retry_s``: an outage or a failover (no
        primary named yet, a demoted one refusing writes). Safe: an event id already in its stream is not appended
        twice. Then the last error goes to the caller."""
        deadline = monotonic() + self.platform.settings.dispatch_retry_s
        sentinel = is_sentinel(self.platform.settings.broker_url())
        pause = 0.05
        while True:
            try:
                return send()
            except (redis.ConnectionError, redis.TimeoutError, ReadOnlyError) as exc:
                # A refusal passes at once where no Sentinel will name another primary.
                if monotonic() >= deadline or (isinstance(exc, ReadOnlyError) and not sentinel):
                    raise
                sleep(pause)
                pause = min(pause * 2, 1.0)

    def publish_many(self, events: Iterable[EventLike]) -> list[Event]:
        """Validate every event first (nothing is sent if one is invalid), then send all in one round trip."""
        built = [self._coerce(item) for item in events]
        if not built:
            return []
        args = [self._args(event, announce=True) for event in built]
        acks = self.platform.replica_acks
        with self.platform.redis().pipeline(transaction=False) as pipe:
            for keys, argv in args:
                APPEND.queue(pipe, keys, argv)
            if not acks:
                pipe.execute()
                return built
            _replies, acked = acks.execute(pipe)
        acks.require(acked, f"publish_events ({len(built)} events)")
        return built

    def _coerce(self, item: EventLike) -> Event:
        if isinstance(item, Event):
            return item
        if not isinstance(item, Mapping):
            raise InvalidEvent(f"invalid event: expected an Event or a mapping, got {type(item).__name__}")
        data = dict(item)
        if "payload" in data:
            data["payload"] = encode_payload(data["payload"])
        if not data.get("trace"):
            data["trace"] = tracing.event_trace(str(data.get("channel")), str(data.get("type")),
                                                str(data.get("id") or ""))
        return build_event(data)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def publish_event(
    channel: str,
    event_type: str,
    payload: Any = None,
    *,
    source: str,
    event_id: str | None = None,
    trace: Mapping[str, str] | None = None,
) -> Event:
    """Publish one event on ``channel`` (stream + pub/sub, one round trip) and return it.

    Raises :class:`UnknownChannel`, :class:`UnknownEventType` or :class:`InvalidEvent` (all ``ValueError``)
    before anything is sent. Publishing an event whose ``event_id`` was already published within
    ``event_id_ttl_s`` sends nothing.
    """
    return EventPublisher(get_platform()).publish(
        channel, event_type, payload, source=source, event_id=event_id, trace=trace
    )


def publish_events(events: Iterable[EventLike]) -> list[Event]:
    """Publish many events in one round trip; items are :class:`Event` objects or mappings with the
    envelope's fields (``channel``, ``type``, ``source``, ``payload``; ``id``/``time``/``trace`` optional)."""
    return EventPublisher(get_platform()).publish_many(events)
