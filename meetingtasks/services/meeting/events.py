"""Subscriptions of the meeting service (it listens to user_events, media_events, ai_events,
signaling_events). The meeting service owns a meeting's lifecycle and orchestrates the follow-up work of
its recordings and transcripts, so two of its reactions start other services' tasks.

- ``user.status_changed`` (offline, with ``meeting_id``) -> ``meeting_user_leave``: a user who went offline leaves
  the meeting
- ``webrtc.disconnected`` (with ``meeting_id``, not ``reason: closed``) -> ``meeting_user_leave``: a dropped
  connection leaves the meeting; a close we asked for does not echo
- ``recording.stopped`` (with ``recording_ref``) -> ``media_transcode`` (mp4): the meeting's archive copy
- ``speech_recognition.completed`` (with ``text``) -> ``emotion_detection``: the meeting's transcript is analysed
  for its mood
- ``speech_recognition.completed`` / ``emotion_detection.completed`` (with ``meeting_id``) -> ``meeting_ai_result``:
  the transcript and the mood are kept on the meeting and pushed to its participants
"""

from __future__ import annotations

from typing import Any

from meetingtasks.events import Event, on_event


@on_event("user_events", "user.status_changed", dispatch="meeting_user_leave")
def leave_when_offline(event: Event) -> dict[str, Any] | None:
    p = event.payload
    if p.get("status") != "offline" or not p.get("meeting_id"):
        return None
    return {"meeting_id": p["meeting_id"], "user_id": p.get("user_id")}


@on_event("signaling_events", "webrtc.disconnected", dispatch="meeting_user_leave")
def leave_when_disconnected(event: Event) -> dict[str, Any] | None:
    p = event.payload
    if not p.get("meeting_id") or p.get("reason") == "closed":
        return None
    return {"meeting_id": p["meeting_id"], "user_id": p.get("user_id")}


@on_event("media_events", "recording.stopped", dispatch="media_transcode")
def archive_recording(event: Event) -> dict[str, Any] | None:
    p = event.payload
    if not p.get("recording_ref"):
        return None
    return {"source_ref": p["recording_ref"], "target_format": "mp4", "meeting_id": p.get("meeting_id")}


@on_event("ai_events", "speech_recognition.completed", dispatch="emotion_detection")
def analyse_transcript(event: Event) -> dict[str, Any] | None:
    p = event.payload
    if not p.get("text"):
        return None
    return {"text": p["text"], "meeting_id": p.get("meeting_id")}


@on_event("ai_events", "speech_recognition.completed", dispatch="meeting_ai_result")
def keep_transcript(event: Event) -> dict[str, Any] | None:
    p = event.payload
    if not p.get("meeting_id"):
        return None
    result = {k: p[k] for k in ("text", "language", "duration_s", "audio_ref", "task_id") if k in p}
    return {"meeting_id": p["meeting_id"], "kind": "speech_recognition", "result": result}


@on_event("ai_events", "emotion_detection.completed", dispatch="meeting_ai_result")
def keep_emotion(event: Event) -> dict[str, Any] | None:
    p = event.payload
    if not p.get("meeting_id"):
        return None
    result = {k: p[k] for k in ("label", "compound", "text", "task_id") if k in p}
    return {"meeting_id": p["meeting_id"], "kind": "emotion_detection", "result": result}
