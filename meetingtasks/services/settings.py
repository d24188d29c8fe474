"""The meeting system's own settings section (YAML section ``meeting``; environment names unchanged:
``MEETINGTASKS_MEETING_MAX_PARTICIPANTS`` ...). Read with :func:`meeting_settings`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from meetingtasks.core.app_settings import AppSettings

if TYPE_CHECKING:
    from meetingtasks.store.platform import Platform


class MeetingSettings(AppSettings):
    """The meeting system's services

    Their state's lifetimes, sweeps, limits and tools.
    """

    yaml_section = "meeting"

    op_ttl_s: int = Field(
        7 * 86_400, ge=60, description="How long a handler run's decisions are kept: the window in which a "
        "redelivered task repeats nothing"
    )
    blob_ttl_s: int = Field(86_400, ge=1, description="Lifetime of a blob (audio, video passed by reference)")
    blob_max_bytes: int = Field(64 * 1_048_576, ge=1024, description="Largest blob accepted by the blob store")
    domain_retention_s: int = Field(
        30 * 86_400, ge=60, description="How long an ended meeting, stopped stream or recording, closed signaling "
        "session is kept"
    )
    login_session_ttl_s: int = Field(12 * 3_600, ge=1, description="Lifetime of a login session")
    login_sweep_interval_s: float = Field(60.0, gt=0, description="How often beat expires stale login sessions")
    meeting_max_participants: int = Field(100, ge=1, description="Most participants one meeting admits")
    meeting_sweep_interval_s: float = Field(60.0, gt=0, description="How often beat ends meetings past their end")
    signaling_heartbeat_timeout_s: float = Field(
        60.0, gt=0, description="A signaling session silent this long is closed by beat"
    )
    signaling_sweep_interval_s: float = Field(15.0, gt=0, description="How often beat looks for silent sessions")
    ffmpeg_path: str | None = Field(None, description="ffmpeg binary; default: PATH, then the imageio-ffmpeg wheel")
    ai_backend: str = Field("local", description="AI backend: local (offline models) or zmq (inference service)")
    ai_zmq_endpoint: str | None = Field(None, description="The inference service for ai_backend=zmq, tcp://host:port")
    ai_zmq_timeout_s: float = Field(30.0, gt=0, description="Longest wait for one inference reply")


def meeting_settings(platform: Platform) -> MeetingSettings:
    """The meeting settings of ``platform`` (built from the environment once per platform)."""
    return platform.section(MeetingSettings)
