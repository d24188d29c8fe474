"""Task types of the media service."""

from __future__ import annotations

from typing import Any

from meetingtasks.priority import Priority
from meetingtasks.registry import task_type
from meetingtasks.services.media.schemas import (
    MediaRecordingStart,
    MediaRecordingStop,
    MediaStreamProcess,
    MediaTranscode,
)


@task_type("media", "media_stream_process", payload=MediaStreamProcess, priority=Priority.HIGH)
def media_stream_process(p: MediaStreamProcess) -> dict[str, Any]:
    return {"meeting_id": p.meeting_id, "user_id": p.user_id}


@task_type("media", "media_recording_start", payload=MediaRecordingStart, priority=Priority.HIGH)
def media_recording_start(p: MediaRecordingStart) -> dict[str, Any]:
    return {"meeting_id": p.meeting_id}


@task_type("media", "media_recording_stop", payload=MediaRecordingStop, priority=Priority.HIGH)
def media_recording_stop(p: MediaRecordingStop) -> dict[str, Any]:
    return {"meeting_id": p.meeting_id}


@task_type("media", "media_transcode", payload=MediaTranscode, priority=Priority.LOW, timeout=900)
def media_transcode(p: MediaTranscode) -> dict[str, Any]:
    return {"source_ref": p.source_ref, "target_format": p.target_format}
