"""Task types of the ai service. The inference runs in a pluggable backend (:mod:`.backends`: offline
models in the worker, or an external inference service over ZeroMQ); audio and video arrive and leave as
blob references (:mod:`meetingtasks.services.blobs`).

==================  ========  ===============================================================================
type                priority  job
==================  ========  ===============================================================================
speech_recognition  normal    transcribe ``audio_ref`` -> ``speech_recognition.completed`` (``text``);
                              refused: missing blob, undecodable audio, unsupported language
emotion_detection   low       emotion of ``text`` (or of ``audio_ref`` transcribed first) ->
                              ``emotion_detection.completed`` (``label``); refused: neither given
audio_denoising     normal    spectral gating of ``audio_ref`` into a new WAV blob ->
                              ``audio_denoising.completed`` (``output_ref``); refused: as above
video_enhancement   low       denoise, contrast and sharpen ``video_ref`` into an MP4 blob ->
                              ``video_enhancement.completed`` (``output_ref``); refused: no video in it
==================  ========  ===============================================================================

An inference service that does not answer raises ``InferenceUnavailable``: retried, then dead-lettered.
"""

from __future__ import annotations

from typing import Any

from meetingtasks.core.errors import PermanentError
from meetingtasks.core.priority import Priority
from meetingtasks.core.registry import task_type
from meetingtasks.services.ai.backends import backend_for
from meetingtasks.services.ai.schemas import (
    AudioDenoising,
    EmotionDetection,
    SpeechRecognition,
    VideoEnhancement,
)
from meetingtasks.services.ai.store import SERVICE, AIStore
from meetingtasks.services.blobs import BlobStore
from meetingtasks.services.operation import Operation, run_once
from meetingtasks.services.settings import meeting_settings
from meetingtasks.store.platform import get_platform

CHANNEL = "ai_events"
#: Longest transcript excerpt carried in an emotion event (the full text is in the task's result).
EXCERPT_CHARS = 500


def _finish(op: Operation, kind: str, result: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """Keep the result, announce it, return it."""
    AIStore(op.platform).save(op.task_id, kind, result)
    op.emit(CHANNEL, f"{kind}.completed", {**event, "task_id": op.task_id})
    return result


@task_type(SERVICE, "speech_recognition", payload=SpeechRecognition, priority=Priority.NORMAL, timeout=600,
           client=True)
def speech_recognition(p: SpeechRecognition) -> dict[str, Any]:
    def body(op: Operation) -> dict[str, Any]:
        audio = BlobStore(op.platform).get(p.audio_ref).data
        transcript = backend_for(meeting_settings(op.platform)).transcribe(audio, p.language)
        result = {**transcript, "audio_ref": p.audio_ref, "meeting_id": p.meeting_id}
        return _finish(op, "speech_recognition", result,
                       {"meeting_id": p.meeting_id, "audio_ref": p.audio_ref, "text": transcript["text"],
                        "language": p.language, "duration_s": transcript.get("duration_s")})

    result: dict[str, Any] = run_once(SERVICE, body)
    return result


@task_type(SERVICE, "emotion_detection", payload=EmotionDetection, priority=Priority.LOW, client=True)
def emotion_detection(p: EmotionDetection) -> dict[str, Any]:
    if p.text is None and p.audio_ref is None:
        raise PermanentError("emotion_detection: give the text, or an audio_ref to transcribe")

    def body(op: Operation) -> dict[str, Any]:
        backend = backend_for(meeting_settings(op.platform))
        text = p.text
        if text is None:
            assert p.audio_ref is not None
            text = backend.transcribe(BlobStore(op.platform).get(p.audio_ref).data, "en-US")["text"]
        emotion = backend.detect_emotion(text)
        result = {**emotion, "text": text, "meeting_id": p.meeting_id}
        return _finish(op, "emotion_detection", result,
                       {"meeting_id": p.meeting_id, "label": emotion["label"], "compound": emotion.get("compound"),
                        "text": text[:EXCERPT_CHARS], "audio_ref": p.audio_ref})

    result: dict[str, Any] = run_once(SERVICE, body)
    return result


@task_type(SERVICE, "audio_denoising", payload=AudioDenoising, priority=Priority.NORMAL, timeout=600,
           client=True)
def audio_denoising(p: AudioDenoising) -> dict[str, Any]:
    def body(op: Operation) -> dict[str, Any]:
        blobs = BlobStore(op.platform)
        cleaned, figures = backend_for(meeting_settings(op.platform)).denoise(blobs.get(p.audio_ref).data)
        output_ref = blobs.put(cleaned, content_type="audio/wav", blob_id=op.derive_id("output").replace("-", ""))
        result = {**figures, "audio_ref": p.audio_ref, "output_ref": output_ref, "meeting_id": p.meeting_id}
        return _finish(op, "audio_denoising", result,
                       {"meeting_id": p.meeting_id, "audio_ref": p.audio_ref, "output_ref": output_ref,
                        "removed_db": figures.get("removed_db")})

    result: dict[str, Any] = run_once(SERVICE, body)
    return result


@task_type(SERVICE, "video_enhancement", payload=VideoEnhancement, priority=Priority.LOW, timeout=900)
def video_enhancement(p: VideoEnhancement) -> dict[str, Any]:
    def body(op: Operation) -> dict[str, Any]:
        blobs = BlobStore(op.platform)
        enhanced, figures = backend_for(meeting_settings(op.platform)).enhance_video(blobs.get(p.video_ref).data)
        output_ref = blobs.put(enhanced, content_type="video/mp4", blob_id=op.derive_id("output").replace("-", ""))
        result = {**figures, "video_ref": p.video_ref, "output_ref": output_ref, "meeting_id": p.meeting_id,
                  "user_id": p.user_id}
        return _finish(op, "video_enhancement", result,
                       {"meeting_id": p.meeting_id, "user_id": p.user_id, "video_ref": p.video_ref,
                        "output_ref": output_ref})

    result: dict[str, Any] = run_once(SERVICE, body)
    return result


def get_ai_result(task_id: str) -> dict[str, Any] | None:
    """The kept result of an AI task, by its id."""
    return AIStore(get_platform()).get(task_id)
