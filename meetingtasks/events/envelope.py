"""The event envelope: what travels on a channel's stream and on its pub/sub channel, as one JSON object::

    {"id": "5f0c...", "type": "meeting.user_joined", "channel": "meeting_events", "source": "meeting",
     "time": 1764000000.123, "payload": {"meeting_id": "m1", "user_id": "u1"},
     "trace": {"traceparent": "00-<32 hex>-<16 hex>-01"}}

``time`` is epoch seconds (an ISO 8601 string is accepted and converted); ``trace`` holds the W3C trace
context (``traceparent``, ``tracestate``, optionally ``baggage``). Unknown fields are refused, so a typo
such as ``"paylaod"`` is an error rather than an empty payload.

:func:`build_event` turns a mapping into an :class:`Event` or raises an :class:`InvalidEvent` (or its
subclasses :class:`UnknownChannel` / :class:`UnknownEventType`) whose one line names the field.
:func:`parse_foreign` reads what an outside service sent with a plain ``PUBLISH``: it fills ``channel``
from the pub/sub channel, ``source`` with ``"external"``, ``time`` with now and, when ``id`` is missing, an
id derived from the message bytes, so that every bridge hearing the same message derives the same id.
"""

from __future__ import annotations

import re
import time as _time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from meetingtasks.core.errors import InvalidEvent
from meetingtasks.core.message import new_id
from meetingtasks.events.channels import CHANNELS, check_channel, check_event_type

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
#: Namespace of ids derived for events that arrive without one (uuid5 of channel and message bytes).
FOREIGN_ID_NAMESPACE = uuid.UUID("6b1f3c52-8f0e-4c39-9a43-3d1b2a6f0e11")
#: ``source`` of an event an outside publisher sent without one.
EXTERNAL_SOURCE = "external"


class Event(BaseModel):
    """One event. Frozen: build a new one with ``model_copy(update=...)``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=new_id, min_length=1, max_length=128, pattern=r"^[^\s]+$")
    type: str = Field(min_length=1, max_length=128)
    channel: str
    source: str = Field(min_length=1, max_length=128)
    time: float = Field(default_factory=_time.time, ge=0, description="epoch seconds")
    payload: dict[str, Any] = Field(default_factory=dict)
    trace: dict[str, str] = Field(default_factory=dict, description="W3C trace context carrier")

    @field_validator("time", mode="before")
    @classmethod
    def _iso_time(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
            try:
                when = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError("not epoch seconds nor an ISO 8601 time") from None
            return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
        return value

    @field_validator("trace")
    @classmethod
    def _check_trace(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if len(key) > 64 or len(text) > 8192:
                raise ValueError(f"entry {key[:64]!r} is too long (keys <= 64, values <= 8192 characters)")
        parent = value.get("traceparent")
        if parent is not None and not _TRACEPARENT.match(parent):
            raise ValueError(f"traceparent {parent!r} is not W3C '00-<32 hex>-<16 hex>-<2 hex>'")
        return value

    @model_validator(mode="after")
    def _check_names(self) -> Event:
        # Raised as ValueError so pydantic reports it; build_event checks first to raise the precise class.
        if self.channel not in CHANNELS:
            raise ValueError(f"unknown channel {self.channel!r}")
        if self.type not in CHANNELS[self.channel]:
            raise ValueError(f"event type {self.type!r} is not carried by {self.channel}")
        return self

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


def invalid_event_message(exc: ValidationError) -> str:
    """One line naming every failing field: ``event.payload: Input should be a valid dictionary``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"event.{where}: {err['msg']}" if where else f"event: {err['msg']}")
    return "invalid event: " + "; ".join(parts)


def build_event(data: Mapping[str, Any]) -> Event:
    """Validate ``data`` into an :class:`Event`; :class:`InvalidEvent` (or a subclass) says what is wrong."""
    if not isinstance(data, Mapping):
        raise InvalidEvent(f"invalid event: expected a JSON object, got {type(data).__name__}")
    channel = check_channel(data.get("channel"))
    check_event_type(channel, data.get("type"))
    try:
        return Event.model_validate(dict(data))
    except ValidationError as exc:
        raise InvalidEvent(invalid_event_message(exc)) from None


def encode_payload(payload: Any) -> dict[str, Any]:
    """A payload as plain JSON data: a mapping or a pydantic model; anything else is an :class:`InvalidEvent`."""
    if payload is None:
        return {}
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json")
    if not isinstance(payload, Mapping):
        raise InvalidEvent(f"invalid event: event.payload must be a JSON object, got {type(payload).__name__}")
    try:
        data: dict[str, Any] = orjson.loads(orjson.dumps(dict(payload)))
    except TypeError as exc:
        raise InvalidEvent(f"invalid event: event.payload is not JSON-serialisable ({exc})") from None
    return data


def parse_event(raw: bytes | str) -> Event:
    """An event as stored in a stream (complete JSON envelope), or :class:`InvalidEvent`."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"invalid event: not JSON ({exc})") from None
    return build_event(data)


def foreign_event_id(channel: str, raw: bytes) -> str:
    """The id of an event that came without one: the same bytes on the same channel give the same id."""
    return str(uuid.uuid5(FOREIGN_ID_NAMESPACE, channel + "\n" + raw.decode("utf-8", "replace")))


def parse_foreign(raw: bytes, channel: str) -> Event:
    """An event sent with a plain ``PUBLISH`` on ``channel``: missing id, channel, source and time are filled."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"invalid event on {channel}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidEvent(f"invalid event on {channel}: expected a JSON object, got {type(data).__name__}")
    if data.get("channel", channel) != channel:
        raise InvalidEvent(f"invalid event on {channel}: it names channel {data['channel']!r}")
    data["channel"] = channel
    if data.get("id") is None:
        data["id"] = foreign_event_id(channel, raw)
    data.setdefault("source", EXTERNAL_SOURCE)
    if data.get("time") is None:
        data["time"] = _time.time()
    if data.get("payload") is None:
        data["payload"] = {}
    return build_event(data)
