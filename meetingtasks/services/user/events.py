"""Subscriptions of the user service (it listens to meeting_events and ai_events).

- ``meeting.user_joined`` -> ``user_status_change`` (busy): a user in a meeting shows as busy
- ``meeting.user_left`` -> ``user_status_change`` (online): and as online again when they leave
- ``video_enhancement.completed`` with ``user_id`` -> ``user_profile_update`` (avatar_url = ``output_ref``): an
  enhanced profile picture/video becomes the avatar
"""

from __future__ import annotations

from typing import Any

from meetingtasks.events import Event, on_event


@on_event("meeting_events", "meeting.user_joined", dispatch="user_status_change")
def busy_in_meeting(event: Event) -> dict[str, Any]:
    return {"user_id": event.payload.get("user_id"), "status": "busy", "meeting_id": event.payload.get("meeting_id")}


@on_event("meeting_events", "meeting.user_left", dispatch="user_status_change")
def online_after_meeting(event: Event) -> dict[str, Any]:
    return {"user_id": event.payload.get("user_id"), "status": "online", "meeting_id": event.payload.get("meeting_id")}


@on_event("ai_events", "video_enhancement.completed", dispatch="user_profile_update")
def enhanced_avatar(event: Event) -> dict[str, Any] | None:
    p = event.payload
    if not p.get("user_id"):
        return None  # a meeting video, not a profile one: the media service handles it
    return {"user_id": p["user_id"], "avatar_url": p.get("output_ref")}
