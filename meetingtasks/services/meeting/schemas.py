"""Payload models of the meeting service's task types."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MeetingCreate(Payload):
    host_id: str = Field(min_length=1, max_length=64)
    title: str = Field(min_length=1, max_length=200)
    meeting_id: str | None = Field(None, max_length=64)
    start_time: datetime | None = None
    max_duration_s: int = Field(4 * 3600, ge=60, le=24 * 3600)
    #: Record the meeting from its start (``meeting.started`` carries it to the media service).
    record: bool = True


class MeetingEnd(Payload):
    meeting_id: str = Field(min_length=1, max_length=64)
    ended_by: str | None = Field(None, max_length=64)
    reason: str = Field("ended", max_length=200)


class MeetingUserJoin(Payload):
    meeting_id: str = Field(min_length=1, max_length=64)
    user_id: str = Field(min_length=1, max_length=64)


class MeetingUserLeave(Payload):
    meeting_id: str = Field(min_length=1, max_length=64)
    user_id: str = Field(min_length=1, max_length=64)


#: AI results the meeting keeps, by the ai task type that produced them.
AIKind = Literal["speech_recognition", "emotion_detection", "audio_denoising", "video_enhancement"]


class MeetingStart(Payload):
    """Start a scheduled meeting (dispatched by ``meeting_create`` for its start time)."""

    meeting_id: str = Field(min_length=1, max_length=64)


class MeetingAIResult(Payload):
    """Keep an AI result on its meeting and notify the participants (from ``ai_events``)."""

    meeting_id: str = Field(min_length=1, max_length=64)
    kind: AIKind
    result: dict[str, Any] = Field(default_factory=dict)


class MeetingNotify(Payload):
    """Deliver a meeting's latest AI result of ``kind`` to one participant's gateway client."""

    meeting_id: str = Field(min_length=1, max_length=64)
    user_id: str = Field(min_length=1, max_length=64)
    kind: AIKind


class MeetingOverdueEnd(Payload):
    """The beat job: end live meetings past their maximum duration (``limit`` per run)."""

    limit: int = Field(500, ge=1, le=100_000)
