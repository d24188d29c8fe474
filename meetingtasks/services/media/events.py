"""Subscriptions of the media service (it listens to meeting_events, ai_events, signaling_events).

- ``meeting.user_joined`` -> ``media_stream_process`` (``kind`` from the event, default video): the participant's
  stream is set up
- ``meeting.started`` (unless ``record: false``) -> ``media_recording_start``: meetings are recorded by default
- ``meeting.ended`` -> ``media_recording_stop``: the recording ends with the meeting
- ``webrtc.connected`` (with ``meeting_id``) -> ``media_stream_process`` (stream_id = ``stream_id`` or the session
  id): the negotiated connection's stream is processed
- ``audio_denoising.completed`` (with ``output_ref``) -> ``media_transcode`` (ogg): cleaned audio is packaged for
  playback
- ``video_enhancement.completed`` (with ``meeting_id`` and ``output_ref``) -> ``media_transcode`` (mp4): enhanced
  meeting video is packaged
"""

from __future__ import annotations

from typing import Any

from meetingtasks.events import Event, on_event


@on_event("meeting_events", "meeting.user_joined", dispatch="media_stream_process")
def process_participant_stream(event: Event) -> dict[str, Any]:
    p = event.payload
    return {"meeting_id": p.get("meeting_id"), "user_id": p.get("user_id"), "stream_id": p.get("stream_id"),
            "kind": p.get("kind") or "video"}


@on_event("meeting_events", "meeting.started", dispatch="media_recording_start")
def start_recording(event: Event) -> dict[str, Any] | None:
    p = event.payload
    if p.get("record") is False:
        return None
    return {"meeting_id": p.get("meeting_id"), "recording_id": p.get("recording_id")}


@on_event("meeting_events", "meeting.ended", dispatch="media_recording_stop")
def stop_recording(event: Event) -> dict[str, Any]:
    p = event.payload
    return {"meeting_id": p.get("meeting_id"), "recording_id": p.get("recording_id")}


@on_event("signaling_events", "webrtc.connected", dispatch="media_stream_process")
def process_connection_stream(event: Event) -> dict[str, Any] | None:
    p = event.payload
    if not p.get("meeting_id"):
        return None
    return {"meeting_id": p["meeting_id"], "user_id": p.get("user_id"),
            "stream_id": p.get("stream_id") or p.get("session_id"), "kind": p.get("kind") or "video"}


@on_event("ai_events", "audio_denoising.completed", dispatch="media_transcode")
def package_denoised_audio(event: Event) -> dict[str, Any] | None:
    p = event.payload
    if not p.get("output_ref"):
        return None
    return {"source_ref": p["output_ref"], "target_format": "ogg", "meeting_id": p.get("meeting_id")}


@on_event("ai_events", "video_enhancement.completed", dispatch="media_transcode")
def package_enhanced_video(event: Event) -> dict[str, Any] | None:
    p = event.payload
    if not p.get("meeting_id") or not p.get("output_ref"):
        return None
    return {"source_ref": p["output_ref"], "target_format": "mp4", "meeting_id": p["meeting_id"]}
