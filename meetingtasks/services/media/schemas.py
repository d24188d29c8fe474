"""Payload models of the media service's task types. Large media travels as blob references."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MediaStreamProcess(Payload):
    meeting_id: str = Field(min_length=1, max_length=64)
    user_id: str = Field(min_length=1, max_length=64)
    stream_id: str | None = Field(None, max_length=160)  # a signaling session id, or "<meeting>:<user>:<kind>"
    kind: Literal["audio", "video", "screen"] = "video"
    #: A chunk of the stream's media (``blob:<id>``): its sound is extracted for the ai service.
    media_ref: str | None = Field(None, max_length=256)


class MediaRecordingStart(Payload):
    meeting_id: str = Field(min_length=1, max_length=64)
    recording_id: str | None = Field(None, max_length=64)


class MediaRecordingStop(Payload):
    meeting_id: str = Field(min_length=1, max_length=64)
    recording_id: str | None = Field(None, max_length=64)


class MediaTranscode(Payload):
    source_ref: str = Field(min_length=1, max_length=256)
    target_format: Literal["mp4", "webm", "mp3", "ogg", "wav"] = "mp4"
    meeting_id: str | None = Field(None, max_length=64)
