"""Subscriptions of the ai service (it listens to meeting_events and media_events).

- ``meeting.ended`` (with ``audio_ref``) -> ``speech_recognition`` (``language`` from the event): the meeting's
  full audio is transcribed
- ``stream.processed`` (with ``audio_ref``) -> ``audio_denoising``: processed audio is cleaned
- ``recording.stopped`` (with ``video_ref``) -> ``video_enhancement``: a recording's video is enhanced
"""

from __future__ import annotations

from typing import Any

from meetingtasks.events import Event, on_event


@on_event("meeting_events", "meeting.ended", dispatch="speech_recognition")
def transcribe_meeting(event: Event) -> dict[str, Any] | None:
    p = event.payload
    if not p.get("audio_ref"):
        return None
    out = {"audio_ref": p["audio_ref"], "meeting_id": p.get("meeting_id")}
    if p.get("language"):
        out["language"] = p["language"]
    return out


@on_event("media_events", "stream.processed", dispatch="audio_denoising")
def denoise_stream_audio(event: Event) -> dict[str, Any] | None:
    p = event.payload
    if not p.get("audio_ref"):
        return None
    return {"audio_ref": p["audio_ref"], "meeting_id": p.get("meeting_id")}


@on_event("media_events", "recording.stopped", dispatch="video_enhancement")
def enhance_recording(event: Event) -> dict[str, Any] | None:
    p = event.payload
    if not p.get("video_ref"):
        return None
    return {"video_ref": p["video_ref"], "meeting_id": p.get("meeting_id")}
