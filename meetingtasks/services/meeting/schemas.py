"""Payload models of the meeting service's task types."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MeetingCreate(Payload):
    host_id: str = Field(min_length=1, max_length=64)
    title: str = Field(min_length=1, max_length=200)
    meeting_id: str | None = Field(None, max_length=64)
    start_time: datetime | None = None
    max_duration_s: int = Field(4 * 3600, ge=60, le=24 * 3600)


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
