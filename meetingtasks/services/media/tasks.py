"""Task types of the media service: participants' streams, meeting recordings, transcoding.

=====================  ========  ===========================================================================
type                   priority  job
=====================  ========  ===========================================================================
media_stream_process   high      set up a participant's stream (``stream.started`` once); with a media
                                 chunk (``media_ref``), extract its sound as 16 kHz mono WAV for the ai
                                 service -> ``stream.processed`` (``audio_ref``); refused: undecodable media
media_recording_start  high      start recording a meeting -> ``recording.started``; refused: another
                                 recording of that id exists, or a named one while the meeting records
media_recording_stop   high      stop a recording; without ``recording_id`` the meeting's media ends: its
                                 active recording and live streams stop -> ``recording.stopped``,
                                 ``stream.stopped``; refused: unknown recording, or one of another meeting
media_transcode        low       run ffmpeg on a blob into mp4/webm/mp3/ogg/wav -> ``transcode.completed``;
                                 refused: missing blob, undecodable input. No ffmpeg: retried, dead-lettered
=====================  ========  ===========================================================================

Recordings here are the meeting's recording *sessions* (who records, from when to when); the media
itself is not muxed into one file, so ``recording.stopped`` carries no ``recording_ref``.
"""

from __future__ import annotations

import time
from typing import Any

from meetingtasks.core.errors import PermanentError
from meetingtasks.core.priority import Priority
from meetingtasks.core.registry import task_type
from meetingtasks.services.blobs import BlobStore
from meetingtasks.services.ffmpeg import Ffmpeg
from meetingtasks.services.media.schemas import (
    MediaRecordingStart,
    MediaRecordingStop,
    MediaStreamProcess,
    MediaTranscode,
)
from meetingtasks.services.media.store import SERVICE, MediaStore
from meetingtasks.services.operation import Operation, run_once
from meetingtasks.services.settings import meeting_settings
from meetingtasks.store.platform import get_platform

CHANNEL = "media_events"

#: target format -> (ffmpeg output options with video, without video, content type)
FORMATS: dict[str, tuple[list[str], list[str], str]] = {
    "mp4": (["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-movflags",
             "+faststart", "-f", "mp4"], ["-vn", "-c:a", "aac", "-f", "mp4"], "video/mp4"),
    "webm": (["-c:v", "libvpx", "-b:v", "1M", "-c:a", "libopus", "-f", "webm"],
             ["-vn", "-c:a", "libopus", "-f", "webm"], "video/webm"),
    "mp3": (["-vn", "-c:a", "libmp3lame", "-q:a", "4", "-f", "mp3"], ["-vn", "-c:a", "libmp3lame", "-q:a", "4",
                                                                      "-f", "mp3"], "audio/mpeg"),
    "ogg": (["-vn", "-c:a", "libvorbis", "-q:a", "4", "-f", "ogg"], ["-vn", "-c:a", "libvorbis", "-q:a", "4",
                                                                     "-f", "ogg"], "audio/ogg"),
    "wav": (["-vn", "-c:a", "pcm_s16le", "-f", "wav"], ["-vn", "-c:a", "pcm_s16le", "-f", "wav"], "audio/wav"),
}


def store() -> MediaStore:
    return MediaStore(get_platform())


@task_type(SERVICE, "media_stream_process", payload=MediaStreamProcess, priority=Priority.HIGH)
def media_stream_process(p: MediaStreamProcess) -> dict[str, Any]:
    def body(op: Operation) -> dict[str, Any]:
        stream_id = p.stream_id or f"{p.meeting_id}:{p.user_id}:{p.kind}"
        media = store()
        outcome = media.start_stream(op, stream_id, p.meeting_id, p.user_id, p.kind, time.time())
        base = {"stream_id": stream_id, "meeting_id": p.meeting_id, "user_id": p.user_id, "kind": p.kind}
        if outcome.get("started"):
            op.emit(CHANNEL, "stream.started", base)
        result: dict[str, Any] = {**base, "state": "live"}
        if p.media_ref is None:
            return result
        blobs = BlobStore(op.platform)
        data = blobs.get(p.media_ref).data
        ffmpeg = Ffmpeg(meeting_settings(op.platform))
        probe = ffmpeg.probe(data, what=f"media chunk {p.media_ref}")
        audio_ref = None
        if probe.has_audio:
            wav = ffmpeg.to_wav(data, what=f"media chunk {p.media_ref}")
            audio_ref = blobs.put(wav, content_type="audio/wav", blob_id=op.derive_id("audio").replace("-", ""))
        media.add_chunk(stream_id, audio_ref)
        op.emit(CHANNEL, "stream.processed", {**base, "media_ref": p.media_ref, "audio_ref": audio_ref,
                                              "duration_s": probe.duration_s})
        result.update(media_ref=p.media_ref, audio_ref=audio_ref, duration_s=probe.duration_s)
        return result

    result: dict[str, Any] = run_once(SERVICE, body)
    return result


@task_type(SERVICE, "media_recording_start", payload=MediaRecordingStart, priority=Priority.HIGH)
def media_recording_start(p: MediaRecordingStart) -> dict[str, Any]:
    def body(op: Operation) -> dict[str, Any]:
        recording_id = p.recording_id or op.derive_id("recording")
        now = time.time()
        outcome = store().start_recording(op, p.meeting_id, recording_id, now)
        if outcome.get("busy"):
            if p.recording_id is None:  # "record this meeting": it already is
                return {"meeting_id": p.meeting_id, "recording_id": outcome["busy"], "already_recording": True}
            raise PermanentError(f"meeting {p.meeting_id!r} is already being recorded ({outcome['busy']})")
        if outcome.get("refused"):
            raise PermanentError(f"recording id {recording_id!r} is taken")
        op.emit(CHANNEL, "recording.started", {"meeting_id": p.meeting_id, "recording_id": recording_id,
                                               "started_at": now})
        return {"meeting_id": p.meeting_id, "recording_id": recording_id, "state": "recording"}

    result: dict[str, Any] = run_once(SERVICE, body)
    return result


@task_type(SERVICE, "media_recording_stop", payload=MediaRecordingStop, priority=Priority.HIGH)
def media_recording_stop(p: MediaRecordingStop) -> dict[str, Any]:
    def body(op: Operation) -> dict[str, Any]:
        now = time.time()
        end_media = p.recording_id is None
        outcome = store().stop_recording(op, p.meeting_id, p.recording_id, now, end_media=end_media)
        refused = outcome.get("refused")
        if refused == "unknown":
            raise PermanentError(f"no recording {outcome['recording_id']!r}")
        if refused:
            raise PermanentError(f"recording {outcome['recording_id']!r} is not one of meeting {p.meeting_id!r}")
        result: dict[str, Any] = {"meeting_id": p.meeting_id, "recording_id": None, "streams_stopped": []}
        rec = outcome.get("recording")
        if isinstance(rec, dict):
            result["recording_id"] = rec["recording_id"]
            if rec.get("already"):
                result["already_stopped"] = True
            else:
                started = rec.get("started_at")
                op.emit(CHANNEL, "recording.stopped",
                        {"meeting_id": p.meeting_id, "recording_id": rec["recording_id"], "stopped_at": now,
                         "duration_s": round(now - float(started), 3) if started else None})
        for stream in outcome["streams"]:
            op.emit(CHANNEL, "stream.stopped", {"meeting_id": p.meeting_id, **stream},
                    discriminator=str(stream["stream_id"]))
            result["streams_stopped"].append(stream["stream_id"])
        return result

    result: dict[str, Any] = run_once(SERVICE, body)
    return result


@task_type(SERVICE, "media_transcode", payload=MediaTranscode, priority=Priority.LOW, timeout=900)
def media_transcode(p: MediaTranscode) -> dict[str, Any]:
    def body(op: Operation) -> dict[str, Any]:
        blobs = BlobStore(op.platform)
        data = blobs.get(p.source_ref).data
        ffmpeg = Ffmpeg(meeting_settings(op.platform))
        probe = ffmpeg.probe(data, what=p.source_ref)
        with_video, audio_only, content_type = FORMATS[p.target_format]
        if not probe.has_video and content_type.startswith("video/"):
            content_type = content_type.replace("video/", "audio/")
        out = ffmpeg.convert(data, with_video if probe.has_video else audio_only, suffix=p.target_format,
                             what=p.source_ref)
        output_ref = blobs.put(out, content_type=content_type, blob_id=op.derive_id("output").replace("-", ""))
        info = {"source_ref": p.source_ref, "output_ref": output_ref, "target_format": p.target_format,
                "size_bytes": len(out), "duration_s": probe.duration_s, "meeting_id": p.meeting_id}
        op.emit(CHANNEL, "transcode.completed", info)
        return info

    result: dict[str, Any] = run_once(SERVICE, body)
    return result
