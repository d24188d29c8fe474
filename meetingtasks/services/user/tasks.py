"""Task types of the user service: accounts, logins and presence.

=====================  ========  ===========================================================================
type                   priority  job
=====================  ========  ===========================================================================
user_register          normal    create an account (name unique, password hashed with scrypt);
                                 refused: name taken -> ``user.registered``
user_login             high      check the password, issue a login session (token, expiry), show the user
                                 online; refused: wrong name or password -> ``user.logged_in``
user_profile_update    low       change display name, avatar, bio; refused: unknown user, nothing given
                                 -> ``user.profile_updated`` (when something changed)
user_status_change     normal    presence (online, away, busy in a meeting, offline); refused: unknown user
                                 -> ``user.status_changed`` (when it changed)
user_sessions_expire   high      beat job: drop expired login sessions; users left without one go offline
=====================  ========  ===========================================================================
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from pydantic import SecretStr

from meetingtasks.core.errors import PermanentError
from meetingtasks.core.priority import Priority
from meetingtasks.core.registry import task_type
from meetingtasks.services.operation import Operation, run_once
from meetingtasks.services.settings import meeting_settings
from meetingtasks.services.user.passwords import dummy_hash, hash_password, verify_password
from meetingtasks.services.user.schemas import (
    LoginResult,
    UserLogin,
    UserProfileUpdate,
    UserRegister,
    UserSessionsExpire,
    UserStatusChange,
)
from meetingtasks.services.user.store import SERVICE, UserStore
from meetingtasks.store.platform import get_platform

CHANNEL = "user_events"


def store() -> UserStore:
    return UserStore(get_platform())


@task_type(SERVICE, "user_register", payload=UserRegister, priority=Priority.NORMAL, client=True)
def user_register(p: UserRegister) -> dict[str, Any]:
    def body(op: Operation) -> dict[str, Any]:
        user_id = op.derive_id("user")
        now = time.time()
        # Hashed before the script so the once-script stays fast; a second run hashes again but stores nothing.
        fields = {"username": p.username, "email": p.email, "display_name": p.display_name or p.username,
                  "password": hash_password(p.password.get_secret_value()), "status": "offline",
                  "created_at": repr(now), "updated_at": repr(now)}
        outcome = store().register(op, user_id, p.username, fields)
        if "taken" in outcome:
            raise PermanentError(f"username {p.username!r} is taken: choose another")
        op.emit(CHANNEL, "user.registered", {"user_id": user_id, "username": p.username,
                                              "display_name": fields["display_name"]})
        return {"user_id": user_id, "username": p.username}

    result: dict[str, Any] = run_once(SERVICE, body)
    return result


@task_type(SERVICE, "user_login", payload=UserLogin, priority=Priority.HIGH, client=True)
def user_login(p: UserLogin) -> dict[str, Any]:
    def body(op: Operation) -> LoginResult:
        users = store()
        user = users.by_username(p.username)
        password = p.password.get_secret_value()
        if user is None:
            verify_password(password, dummy_hash())  # same time as a wrong password: names cannot be probed
            raise PermanentError("wrong username or password")
        if not verify_password(password, user.password_hash):
            raise PermanentError("wrong username or password")
        now = time.time()
        token = op.once("token", lambda: secrets.token_urlsafe(32), secret=True)
        ttl_s = meeting_settings(get_platform()).login_session_ttl_s
        expires_at = users.add_login(token, user, now=now, ttl_s=ttl_s)
        presence = users.set_status(op, user.id, "online", meeting_id=None, now=now, only_from="offline")
        op.emit(CHANNEL, "user.logged_in", {"user_id": user.id, "username": user.username, "expires_at": expires_at})
        if presence.get("changed"):
            op.emit(CHANNEL, "user.status_changed", {"user_id": user.id, "status": "online",
                                                      "previous": presence.get("previous")})
        return LoginResult(user_id=user.id, username=user.username, token=SecretStr(token), expires_at=expires_at)

    result: dict[str, Any] = run_once(SERVICE, body)
    return result


@task_type(SERVICE, "user_profile_update", payload=UserProfileUpdate, priority=Priority.LOW,
           client=True, subject_field="user_id")
def user_profile_update(p: UserProfileUpdate) -> dict[str, Any]:
    changes = {name: value for name, value in
               (("display_name", p.display_name), ("avatar_url", p.avatar_url), ("bio", p.bio)) if value is not None}
    if not changes:
        raise PermanentError("user_profile_update: give at least one of display_name, avatar_url, bio")

    def body(op: Operation) -> dict[str, Any]:
        outcome = store().update_profile(op, p.user_id, changes, time.time())
        if outcome.get("unknown"):
            raise PermanentError(f"no user {p.user_id!r}")
        changed: list[str] = outcome["changed"]
        if changed:
            op.emit(CHANNEL, "user.profile_updated",
                    {"user_id": p.user_id, "changed": changed, **{name: changes[name] for name in changed}})
        return {"user_id": p.user_id, "changed": changed}

    result: dict[str, Any] = run_once(SERVICE, body)
    return result


@task_type(SERVICE, "user_status_change", payload=UserStatusChange, priority=Priority.NORMAL,
           client=True, subject_field="user_id")
def user_status_change(p: UserStatusChange) -> dict[str, Any]:
    def body(op: Operation) -> dict[str, Any]:
        outcome = store().set_status(op, p.user_id, p.status, meeting_id=p.meeting_id, now=time.time())
        if outcome.get("unknown"):
            raise PermanentError(f"no user {p.user_id!r}")
        if outcome["changed"]:
            op.emit(CHANNEL, "user.status_changed",
                    {"user_id": p.user_id, "status": outcome["status"], "previous": outcome["previous"],
                     "meeting_id": outcome.get("meeting_id") or None})
        return {"user_id": p.user_id, "status": outcome["status"], "changed": bool(outcome["changed"])}

    result: dict[str, Any] = run_once(SERVICE, body)
    return result


@task_type(SERVICE, "user_sessions_expire", payload=UserSessionsExpire, priority=Priority.HIGH, timeout=120)
def user_sessions_expire(p: UserSessionsExpire) -> dict[str, Any]:
    def body(op: Operation) -> dict[str, Any]:
        users = store()
        now = time.time()
        swept = users.expire_logins(op, now=now, limit=p.limit)
        offline = []
        for user_id in swept["users"]:
            outcome = users.set_status(op, user_id, "offline", meeting_id=None, now=now, name=f"offline:{user_id}")
            if outcome.get("changed"):
                offline.append(user_id)
                op.emit(CHANNEL, "user.status_changed",
                        {"user_id": user_id, "status": "offline", "previous": outcome["previous"],
                         "meeting_id": outcome.get("meeting_id") or None, "reason": "session expired"},
                        discriminator=user_id)
        return {"expired": int(swept["expired"]), "offline": offline}

    result: dict[str, Any] = run_once(SERVICE, body)
    return result
