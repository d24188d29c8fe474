"""The user service's state: users (``Keys.user``), unique names (``Keys.username``) and login sessions
(``Keys.login``, indexed by expiry in ``Keys.logins`` and per user in ``Keys.user_logins``).

Every change is a once-script (:mod:`meetingtasks.services.operation`): a redelivered task gets the first
run's outcome. Login sessions are stored under the SHA-256 of their token, so reading Redis does not
reveal a usable token.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from meetingtasks.services.operation import Operation, once_script
from meetingtasks.store.platform import Platform

SERVICE = "user"
STATUSES = ("online", "away", "busy", "offline")
#: A login hash outlives its expiry by this much, so the beat sweep still finds it and sets the user offline.
LOGIN_GRACE_S = 3_600

_REGISTER = once_script("user_register")
_PROFILE = once_script("user_profile")
_STATUS = once_script("user_status")
_EXPIRE_LOGINS = once_script("user_expire_logins")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def as_list(value: Any) -> list[Any]:
    """A Lua array from ``cjson`` (an empty one arrives as ``{}``)."""
    return list(value) if isinstance(value, list) else []


@dataclass(frozen=True)
class User:
    id: str
    username: str
    email: str
    display_name: str
    avatar_url: str
    bio: str
    status: str
    meeting_id: str
    created_at: float
    password_hash: str

    def public(self) -> dict[str, Any]:
        """The user as other services and clients may see it (no password hash)."""
        return {"user_id": self.id, "username": self.username, "email": self.email,
                "display_name": self.display_name, "avatar_url": self.avatar_url or None, "bio": self.bio or None,
                "status": self.status, "meeting_id": self.meeting_id or None}


class UserStore:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.keys = platform.keys
        self.redis = platform.redis(SERVICE)

    # --- users ------------------------------------------------------------------------------------------------
    def register(self, op: Operation, user_id: str, username: str, fields: dict[str, str]) -> dict[str, Any]:
        """``{"created": id}`` or ``{"taken": owner id}``."""
        flat = [x for pair in fields.items() for x in pair]
        out: dict[str, Any] = op.mutate(_REGISTER, "register", [self.keys.username(username), self.keys.user(user_id)],
                                        [user_id, *flat])
        return out

    def get(self, user_id: str) -> User | None:
        raw = self.redis.hgetall(self.keys.user(user_id))
        if not raw:
            return None
        f = {_text(k): _text(v) for k, v in raw.items()}
        return User(id=user_id, username=f.get("username", ""), email=f.get("email", ""),
                    display_name=f.get("display_name", ""), avatar_url=f.get("avatar_url", ""),
                    bio=f.get("bio", ""), status=f.get("status", "offline"), meeting_id=f.get("meeting_id", ""),
                    created_at=float(f.get("created_at", "0")), password_hash=f.get("password", ""))

    def by_username(self, username: str) -> User | None:
        user_id = self.redis.get(self.keys.username(username))
        return None if user_id is None else self.get(_text(user_id))

    def update_profile(self, op: Operation, user_id: str, changes: dict[str, str], now: float) -> dict[str, Any]:
        """``{"changed": [field, ...]}`` or ``{"unknown": true}``."""
        flat = [x for pair in changes.items() for x in pair]
        out: dict[str, Any] = op.mutate(_PROFILE, "profile", [self.keys.user(user_id)], [repr(now), *flat])
        out["changed"] = as_list(out.get("changed"))
        return out

    def set_status(self, op: Operation, user_id: str, status: str, *, meeting_id: str | None, now: float,
                   only_from: str | None = None, name: str = "status") -> dict[str, Any]:
        """``{"changed", "previous", "status", "meeting_id"}`` or ``{"unknown": true}``."""
        out: dict[str, Any] = op.mutate(_STATUS, name, [self.keys.user(user_id)],
                                        [status, meeting_id or "", repr(now), only_from or ""])
        return out

    # --- login sessions ---------------------------------------------------------------------------------------
    def add_login(self, token: str, user: User, *, now: float, ttl_s: int) -> float:
        """Store a login session (idempotent: the same token gives the same record); returns its expiry."""
        digest = token_digest(token)
        expires_at = now + ttl_s
        key = self.keys.login(digest)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, "created_at", repr(now))
            pipe.hsetnx(key, "expires_at", repr(expires_at))
            pipe.hset(key, mapping={"user_id": user.id, "username": user.username})
            pipe.hget(key, "expires_at")
            pipe.execute()
        stored = float(_text(self.redis.hget(key, "expires_at")))
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.expireat(key, int(stored) + LOGIN_GRACE_S)
            pipe.zadd(self.keys.logins, {digest: stored})
            pipe.sadd(self.keys.user_logins(user.id), digest)
            pipe.execute()
        return stored

    def login(self, token: str, *, now: float) -> dict[str, str] | None:
        """The login session of ``token`` if it exists and has not expired."""
        raw = self.redis.hgetall(self.keys.login(token_digest(token)))
        if not raw:
            return None
        f = {_text(k): _text(v) for k, v in raw.items()}
        return f if float(f.get("expires_at", "0")) > now else None

    def logins_of(self, user_id: str) -> int:
        return int(self.redis.scard(self.keys.user_logins(user_id)))

    def expire_logins(self, op: Operation, *, now: float, limit: int) -> dict[str, Any]:
        """Remove up to ``limit`` expired logins: ``{"expired": n, "users": [ids left without a login]}``."""
        out: dict[str, Any] = op.mutate(_EXPIRE_LOGINS, "expire-logins", [self.keys.logins],
                                        [repr(now), limit, self.keys.login(""), self.keys.user_logins("")])
        out["users"] = as_list(out.get("users"))
        return out
