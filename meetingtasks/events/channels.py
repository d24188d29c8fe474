"""The event channels as data: which event types each channel carries, which service
publishes on it and which services subscribe to it.

Nothing else in the code base lists channels or event types; publishing, the bridge and the subscription
decorator all check names against these tables and fail with a "did you mean" line.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from types import MappingProxyType

from meetingtasks.errors import UnknownChannel, UnknownEventType

#: channel -> the event types it carries.
CHANNELS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "user_events": ("user.registered", "user.logged_in", "user.profile_updated", "user.status_changed"),
    "meeting_events": ("meeting.created", "meeting.started", "meeting.ended", "meeting.user_joined",
                       "meeting.user_left"),
    "media_events": ("stream.started", "stream.stopped", "stream.processed", "recording.started",
                     "recording.stopped", "transcode.completed"),
    "ai_events": ("speech_recognition.completed", "emotion_detection.completed", "audio_denoising.completed",
                  "video_enhancement.completed"),
    "signaling_events": ("webrtc.offer", "webrtc.answer", "webrtc.ice_candidate", "webrtc.connected",
                         "webrtc.disconnected"),
})

#: channel -> the service that publishes on it. Malformed events heard on a channel are dead-lettered there.
OWNERS: Mapping[str, str] = MappingProxyType({
    "user_events": "user",
    "meeting_events": "meeting",
    "media_events": "media",
    "ai_events": "ai",
    "signaling_events": "signaling",
})

#: channel -> the services that subscribe to it (the "subscribed by" column of docs/events.md).
SUBSCRIBERS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "user_events": ("meeting",),
    "meeting_events": ("user", "ai", "media", "signaling"),
    "media_events": ("meeting", "ai", "signaling"),
    "ai_events": ("meeting", "media", "user"),
    "signaling_events": ("meeting", "media"),
})


def _hint(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_channel(channel: object) -> str:
    """``channel`` if it is an event channel, else :class:`UnknownChannel` naming the known ones."""
    if isinstance(channel, str) and channel in CHANNELS:
        return channel
    known = list(CHANNELS)
    hint = _hint(channel, known) if isinstance(channel, str) else ""
    raise UnknownChannel(f"unknown event channel {channel!r}{hint}; channels: {', '.join(known)}")


def check_event_type(channel: str, event_type: object) -> str:
    """``event_type`` if ``channel`` carries it, else :class:`UnknownEventType` naming the channel's types."""
    known = list(CHANNELS[check_channel(channel)])
    if isinstance(event_type, str) and event_type in known:
        return event_type
    hint = _hint(event_type, known) if isinstance(event_type, str) else ""
    raise UnknownEventType(
        f"event type {event_type!r} is not carried by {channel}{hint}; its types: {', '.join(known)}"
    )
