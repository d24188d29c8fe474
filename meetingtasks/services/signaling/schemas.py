"""Payload models of the signaling service's task types."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebRTCDescription(Payload):
    session_id: str = Field(min_length=1, max_length=160)  # "<meeting id>:<user id>" by default
    from_user: str = Field(min_length=1, max_length=64)
    to_user: str = Field(min_length=1, max_length=64)
    sdp: str = Field(min_length=1, max_length=65_536)
    meeting_id: str | None = Field(None, max_length=64)


class SignalingWebRTCOffer(WebRTCDescription):
    pass


class SignalingWebRTCAnswer(WebRTCDescription):
    pass


class SignalingIceCandidate(Payload):
    session_id: str = Field(min_length=1, max_length=160)  # "<meeting id>:<user id>" by default
    from_user: str = Field(min_length=1, max_length=64)
    to_user: str = Field(min_length=1, max_length=64)
    candidate: str = Field(min_length=1, max_length=1024)
    sdp_mid: str | None = Field(None, max_length=64)
    sdp_mline_index: int | None = Field(None, ge=0, le=255)


class SignalingConnectionManage(Payload):
    session_id: str = Field(min_length=1, max_length=160)  # "<meeting id>:<user id>" by default
    user_id: str = Field(min_length=1, max_length=64)
    action: Literal["open", "close", "heartbeat"]
    meeting_id: str | None = Field(None, max_length=64)


class SignalingStaleClose(Payload):
    """The beat job: close sessions silent for ``signaling_heartbeat_timeout_s`` (``limit`` per run)."""

    limit: int = Field(1000, ge=1, le=100_000)
