"""Task types of the meeting service."""

from __future__ import annotations

from typing import Any

from meetingtasks.priority import Priority
from meetingtasks.registry import task_type
from meetingtasks.services.meeting.schemas import MeetingCreate, MeetingEnd, MeetingUserJoin, MeetingUserLeave


@task_type("meeting", "meeting_create", payload=MeetingCreate, priority=Priority.HIGH)
def meeting_create(p: MeetingCreate) -> dict[str, Any]:
    return {"title": p.title}


@task_type("meeting", "meeting_end", payload=MeetingEnd, priority=Priority.HIGH)
def meeting_end(p: MeetingEnd) -> dict[str, Any]:
    return {"meeting_id": p.meeting_id}


@task_type("meeting", "meeting_user_join", payload=MeetingUserJoin, priority=Priority.CRITICAL)
def meeting_user_join(p: MeetingUserJoin) -> dict[str, Any]:
    return {"meeting_id": p.meeting_id, "user_id": p.user_id}


@task_type("meeting", "meeting_user_leave", payload=MeetingUserLeave, priority=Priority.HIGH)
def meeting_user_leave(p: MeetingUserLeave) -> dict[str, Any]:
    return {"meeting_id": p.meeting_id, "user_id": p.user_id}
