"""The event channels: which event types each channel carries and which service owns it, as registrations.

:func:`channel` declares one (the meeting system declares its five in :mod:`meetingtasks.services`, an
application of yours in its own module). Nothing else in the code base lists channels or event types;
publishing, the bridge and the subscription decorator check names against this table and fail with a
"did you mean" line. :data:`CHANNELS` and :data:`OWNERS` are read-only views of it that load the built-in
applications on first read.
"""

from __future__ import annotations

import difflib
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from meetingtasks.core import applications
from meetingtasks.core.errors import ConfigurationError, UnknownChannel, UnknownEventType
from meetingtasks.core.registry import check_service_name, declare_service

#: A channel name is the pub/sub channel outside publishers use and part of its stream's key (``P events:<name>``).
CHANNEL_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")
#: Event types travel inside the envelope only: dotted names such as ``invoice.paid``.
EVENT_TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,99}")


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    event_types: tuple[str, ...]
    #: The service that publishes on it; malformed events heard on the channel are dead-lettered there.
    owner: str


class ChannelTable:
    def __init__(self) -> None:
        self._specs: dict[str, ChannelSpec] = {}
        self._lock = threading.Lock()

    def declare(self, spec: ChannelSpec) -> ChannelSpec:
        # The built-in applications' channels first: one declared unlike them is refused here, at the call, not
        # by whatever reads the table first (publishing, the bridge, a replay) every time after.
        applications.load_builtin()
        with self._lock:
            known = self._specs.get(spec.name)
            if known is not None and known != spec:
                raise ConfigurationError(f"event channel {spec.name!r} is declared twice, differently: "
                                         f"{list(known.event_types)} owned by {known.owner!r} and "
                                         f"{list(spec.event_types)} owned by {spec.owner!r}")
            self._specs[spec.name] = spec
        return spec

    def specs(self) -> dict[str, ChannelSpec]:
        applications.load_builtin()
        return self._specs


CHANNEL_TABLE = ChannelTable()


def channel(name: str, event_types: Iterable[str], *, owner: str) -> ChannelSpec:
    """Declare the event channel ``name`` carrying ``event_types``, published by the service ``owner``.

    Call it at import of your application's module, before the ``on_event`` subscriptions that listen to it.
    Declaring the same channel again identically is a no-op; differently, or with a bad name, is a one-line
    :class:`ConfigurationError`.
    """
    if not isinstance(name, str) or not CHANNEL_NAME.fullmatch(name):
        raise ConfigurationError(f"event channel name {name!r} is not allowed: use 1-64 lowercase letters, digits, "
                                 "'_' or '-', starting with a letter (it names a pub/sub channel and a Redis key)")
    if isinstance(event_types, str):
        raise ConfigurationError(f"event channel {name!r}: event_types must be a list of names, not the string "
                                 f"{event_types!r}")
    types = tuple(event_types)
    bad = [t for t in types if not isinstance(t, str) or not EVENT_TYPE_NAME.fullmatch(t)]
    if not types or bad:
        raise ConfigurationError(f"event channel {name!r}: event types must be 1-100 letters, digits, '_', '.' or "
                                 f"'-', starting with a letter, at least one (bad: {bad or 'none given'})")
    if len(set(types)) != len(types):
        raise ConfigurationError(f"event channel {name!r}: an event type is listed twice in {list(types)}")
    try:
        check_service_name(owner)
    except ConfigurationError as exc:
        raise ConfigurationError(f"event channel {name!r}: owner: {exc}") from None
    declare_service(owner)
    return CHANNEL_TABLE.declare(ChannelSpec(name, types, owner))


class _ChannelView(Mapping[str, tuple[str, ...]]):
    """channel -> the event types it carries."""

    def __getitem__(self, name: str) -> tuple[str, ...]:
        return CHANNEL_TABLE.specs()[name].event_types

    def __contains__(self, name: object) -> bool:  # every event's validation asks: one dict lookup
        return name in CHANNEL_TABLE.specs()

    def __iter__(self) -> Iterator[str]:
        return iter(list(CHANNEL_TABLE.specs()))

    def __len__(self) -> int:
        return len(CHANNEL_TABLE.specs())

    def __repr__(self) -> str:
        return f"CHANNELS({dict(self)!r})"


class _OwnerView(Mapping[str, str]):
    """channel -> the service that publishes on it."""

    def __getitem__(self, name: str) -> str:
        return CHANNEL_TABLE.specs()[name].owner

    def __iter__(self) -> Iterator[str]:
        return iter(list(CHANNEL_TABLE.specs()))

    def __len__(self) -> int:
        return len(CHANNEL_TABLE.specs())

    def __repr__(self) -> str:
        return f"OWNERS({dict(self)!r})"


#: channel -> the event types it carries (every declared channel, read live).
CHANNELS: Mapping[str, tuple[str, ...]] = _ChannelView()
#: channel -> the service that publishes on it. Malformed events heard on a channel are dead-lettered there.
OWNERS: Mapping[str, str] = _OwnerView()


def _hint(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_channel(channel: object) -> str:
    """``channel`` if it is an event channel, else :class:`UnknownChannel` naming the known ones."""
    specs = CHANNEL_TABLE.specs()
    if isinstance(channel, str) and channel in specs:
        return channel
    known = list(specs)
    hint = _hint(channel, known) if isinstance(channel, str) else ""
    raise UnknownChannel(f"unknown event channel {channel!r}{hint}; channels: {', '.join(known)} (a channel of "
                         "your own is declared with meetingtasks.channel() in a module this process imports: "
                         "--include or MEETINGTASKS_INCLUDE)")


def check_event_type(channel: str, event_type: object) -> str:
    """``event_type`` if ``channel`` carries it, else :class:`UnknownEventType` naming the channel's types."""
    known = list(CHANNEL_TABLE.specs()[check_channel(channel)].event_types)
    if isinstance(event_type, str) and event_type in known:
        return event_type
    hint = _hint(event_type, known) if isinstance(event_type, str) else ""
    raise UnknownEventType(
        f"event type {event_type!r} is not carried by {channel}{hint}; its types: {', '.join(known)}"
    )
