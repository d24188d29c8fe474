"""Subscriptions of the signaling service (it listens to meeting_events and media_events).

A participant's signaling session id is the event's ``session_id`` when it carries one, else
``<meeting_id>:<user_id>``.

- ``meeting.user_joined`` -> ``signaling_connection_manage`` (open): the participant's session opens
- ``meeting.user_left`` -> ``signaling_connection_manage`` (close): and closes when they leave
- ``meeting.ended`` (with ``participants``) -> ``signaling_connection_manage`` (close), one per participant: every
  session of the meeting closes
- ``stream.started`` (with ``meeting_id`` and ``user_id``) -> ``signaling_connection_manage`` (heartbeat): media
  flowing proves the session alive
"""

from __future__ import annotations

from typing import Any

from meetingtasks.events import Event, on_event


def manage(meeting_id: Any, user_id: Any, action: str, session_id: Any = None) -> dict[str, Any]:
    """The ``signaling_connection_manage`` payload; invalid ids are left for the payload model to refuse."""
    if not session_id and meeting_id and user_id:
        session_id = f"{meeting_id}:{user_id}"
    return {"session_id": session_id, "user_id": user_id, "action": action, "meeting_id": meeting_id}


@on_event("meeting_events", "meeting.user_joined", dispatch="signaling_connection_manage")
def open_session(event: Event) -> dict[str, Any]:
    p = event.payload
    return manage(p.get("meeting_id"), p.get("user_id"), "open", p.get("session_id"))


@on_event("meeting_events", "meeting.user_left", dispatch="signaling_connection_manage")
def close_session(event: Event) -> dict[str, Any]:
    p = event.payload
    return manage(p.get("meeting_id"), p.get("user_id"), "close", p.get("session_id"))


@on_event("meeting_events", "meeting.ended", dispatch="signaling_connection_manage")
def close_meeting_sessions(event: Event) -> list[dict[str, Any]]:
    meeting_id = event.payload.get("meeting_id")
    return [manage(meeting_id, user, "close") for user in event.payload.get("participants") or []]


@on_event("media_events", "stream.started", dispatch="signaling_connection_manage")
def heartbeat_from_media(event: Event) -> dict[str, Any] | None:
    p = event.payload
    if not p.get("meeting_id") or not p.get("user_id"):
        return None
    return manage(p["meeting_id"], p["user_id"], "heartbeat", p.get("session_id"))
