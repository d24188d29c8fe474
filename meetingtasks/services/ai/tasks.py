"""Task types of the ai service."""

from __future__ import annotations

from typing import Any

from meetingtasks.priority import Priority
from meetingtasks.registry import task_type
from meetingtasks.services.ai.schemas import (
    AudioDenoising,
    EmotionDetection,
    SpeechRecognition,
    VideoEnhancement,
)


@task_type("ai", "speech_recognition", payload=SpeechRecognition, priority=Priority.NORMAL, timeout=600)
def speech_recognition(p: SpeechRecognition) -> dict[str, Any]:
    return {"audio_ref": p.audio_ref}


@task_type("ai", "emotion_detection", payload=EmotionDetection, priority=Priority.LOW)
def emotion_detection(p: EmotionDetection) -> dict[str, Any]:
    return {"meeting_id": p.meeting_id}


@task_type("ai", "audio_denoising", payload=AudioDenoising, priority=Priority.NORMAL, timeout=600)
def audio_denoising(p: AudioDenoising) -> dict[str, Any]:
    return {"audio_ref": p.audio_ref}


@task_type("ai", "video_enhancement", payload=VideoEnhancement, priority=Priority.LOW, timeout=900)
def video_enhancement(p: VideoEnhancement) -> dict[str, Any]:
    return {"video_ref": p.video_ref}
