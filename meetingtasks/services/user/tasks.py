"""Task types of the user service."""

from __future__ import annotations

from typing import Any

from meetingtasks.priority import Priority
from meetingtasks.registry import task_type
from meetingtasks.services.user.schemas import UserLogin, UserProfileUpdate, UserRegister, UserStatusChange


@task_type("user", "user_register", payload=UserRegister, priority=Priority.NORMAL)
def user_register(p: UserRegister) -> dict[str, Any]:
    return {"username": p.username}


@task_type("user", "user_login", payload=UserLogin, priority=Priority.HIGH)
def user_login(p: UserLogin) -> dict[str, Any]:
    return {"username": p.username}


@task_type("user", "user_profile_update", payload=UserProfileUpdate, priority=Priority.LOW)
def user_profile_update(p: UserProfileUpdate) -> dict[str, Any]:
    return {"user_id": p.user_id}


@task_type("user", "user_status_change", payload=UserStatusChange, priority=Priority.NORMAL)
def user_status_change(p: UserStatusChange) -> dict[str, Any]:
    return {"user_id": p.user_id, "status": p.status}
