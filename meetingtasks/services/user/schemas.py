"""Payload models of the user service's task types."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserRegister(Payload):
    username: str = Field(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")
    email: str = Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    #: Secret: sealed before it leaves the dispatching process, opened only by the worker
    #: (meetingtasks.core.secret_fields).
    password: SecretStr = Field(min_length=8, max_length=128)
    display_name: str | None = Field(None, max_length=64)


class UserLogin(Payload):
    username: str = Field(min_length=1, max_length=32)
    password: SecretStr = Field(min_length=1, max_length=128)


class LoginResult(BaseModel):
    """What ``user_login`` returns: the session token is secret (sealed in every record, opened for the caller)."""

    user_id: str
    username: str
    token: SecretStr
    expires_at: float


class UserProfileUpdate(Payload):
    user_id: str = Field(min_length=1, max_length=64)
    display_name: str | None = Field(None, max_length=64)
    avatar_url: str | None = Field(None, max_length=512, pattern=r"^(https?://\S+|blob:[A-Za-z0-9_-]+)$")
    bio: str | None = Field(None, max_length=1000)


class UserStatusChange(Payload):
    user_id: str = Field(min_length=1, max_length=64)
    status: Literal["online", "away", "busy", "offline"]
    #: The meeting that causes the change: busy in it, online again after it (only if busy in it).
    meeting_id: str | None = Field(None, max_length=64)


class UserSessionsExpire(Payload):
    """The beat job: expire login sessions past their expiry (``limit`` per run)."""

    limit: int = Field(1000, ge=1, le=100_000)
