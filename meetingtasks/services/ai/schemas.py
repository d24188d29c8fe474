"""Payload models of the ai service's task types. Audio and video travel as blob references."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SpeechRecognition(Payload):
    audio_ref: str = Field(min_length=1, max_length=256)
    meeting_id: str | None = Field(None, max_length=64)
    language: str = Field("en-US", max_length=16)


class EmotionDetection(Payload):
    text: str | None = Field(None, max_length=100_000)
    audio_ref: str | None = Field(None, max_length=256)
    meeting_id: str | None = Field(None, max_length=64)


class AudioDenoising(Payload):
    audio_ref: str = Field(min_length=1, max_length=256)
    meeting_id: str | None = Field(None, max_length=64)


class VideoEnhancement(Payload):
    video_ref: str = Field(min_length=1, max_length=256)
    meeting_id: str | None = Field(None, max_length=64)
    #: Set for a profile video: the enhanced one becomes the user's avatar (``user`` subscribes).
    user_id: str | None = Field(None, max_length=64)
