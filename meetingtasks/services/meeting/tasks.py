"""Task types of the meeting service: a meeting's lifecycle, its participants, and its AI results.

=====================  ========  ===========================================================================
type                   priority  job
=====================  ========  ===========================================================================
meeting_create         high      create a meeting; no ``start_time`` (or a past one): it starts now, else
                                 ``meeting_start`` is scheduled for then through the delayed set; refused:
                                 id taken -> ``meeting.created`` (+ ``meeting.started``)
meeting_start          high      start a scheduled meeting; a live one gets its automatic end
                                 (``meeting_end`` at start + ``max_duration_s``) -> ``meeting.started``
meeting_end            high      end a meeting (everyone in it leaves); refused: unknown meeting, or
                                 ``ended_by`` is not the host -> ``meeting.ended``, ``meeting.user_left``
meeting_user_join      critical  add a participant; refused: unknown, not started, ended or full meeting
                                 -> ``meeting.user_joined``. A participant joining through the gateway gets
                                 pending notices (``meeting_notify``) for the meeting's AI results
meeting_user_leave     high      remove a participant; refused: unknown or ended meeting, not in it
                                 -> ``meeting.user_left``
meeting_ai_result      normal    keep an AI result on its meeting (from ``ai_events``) and deliver the
                                 participants' pending notices of that kind now; refused: unknown meeting
meeting_notify         high      the notice itself: its result (pushed by the gateway to the participant's
                                 client) is the meeting's latest result of its kind
meeting_overdue_end    high      beat job: end live meetings past their automatic end
=====================  ========  ===========================================================================

**Notices** are how every participant's WebSocket client hears about results it did not ask for, within
the gateway protocol (a client sees its own tasks only): a participant who joins over the gateway gets,
per AI result kind, a ``meeting_notify`` task owned by its client and scheduled for the meeting's
automatic end. ``meeting_user_join``'s result lists their ids; the client ``subscribe``s to them. When a
result arrives, ``meeting_ai_result`` moves those notices' due time to now: they run at once and their
``SUCCEEDED`` push carries the result. Each delivered notice arms the next one for its kind (its id is in
the result, ``next_notice_id``); the meeting's end cancels the ones still pending.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import Any, get_args

from meetingtasks.core.errors import PermanentError, TaskNotFound
from meetingtasks.core.priority import Priority
from meetingtasks.core.registry import REGISTRY, task_type
from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.services.meeting.schemas import (
    AIKind,
    MeetingAIResult,
    MeetingCreate,
    MeetingEnd,
    MeetingNotify,
    MeetingOverdueEnd,
    MeetingStart,
    MeetingUserJoin,
    MeetingUserLeave,
)
from meetingtasks.services.meeting.store import SERVICE, MeetingStore
from meetingtasks.services.operation import Operation, run_once
from meetingtasks.store.cancel import cancel_task
from meetingtasks.store.platform import get_platform
from meetingtasks.store.status import Status
from meetingtasks.worker.current import current_task_id

CHANNEL = "meeting_events"
#: The AI results a participant is notified of.
NOTICE_KINDS: tuple[str, ...] = ("speech_recognition", "emotion_detection")
_WAITING = frozenset({Status.SCHEDULED, Status.QUEUED, Status.RETRYING})


def store() -> MeetingStore:
    return MeetingStore(get_platform())


def _eta(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


# --- lifecycle ------------------------------------------------------------------------------------------------
def start_meeting(op: Operation, meeting_id: str) -> dict[str, Any]:
    """Start ``meeting_id`` if it is scheduled: state live, automatic end scheduled, ``meeting.started``."""
    meetings = store()
    outcome = meetings.start(op, meeting_id, time.time())
    if outcome.get("refused") == "unknown":
        raise PermanentError(f"no meeting {meeting_id!r}")
    if not outcome.get("started"):
        return {"meeting_id": meeting_id, "state": outcome.get("state"), "started": False}
    ends_at = float(outcome["ends_at"])
    auto_end = op.derive_id("auto-end")
    Dispatcher(op.platform).dispatch(
        "meeting_end", {"meeting_id": meeting_id, "reason": "max_duration"}, eta=_eta(ends_at), task_id=auto_end)
    meetings.set_field(meeting_id, "auto_end_task", auto_end)
    meeting = meetings.get(meeting_id)
    assert meeting is not None
    op.emit(CHANNEL, "meeting.started", {"meeting_id": meeting_id, "title": meeting.title,
                                         "host_id": meeting.host_id, "started_at": meeting.started_at,
                                         "ends_at": ends_at, "record": meeting.record})
    return {"meeting_id": meeting_id, "state": "live", "started": True, "ends_at": ends_at}


def end_meeting(op: Operation, meeting_id: str, *, reason: str, ended_by: str | None,
                name: str = "end") -> dict[str, Any]:
    """End ``meeting_id``: everyone leaves, pending notices and the automatic end are cancelled, events out."""
    meetings = store()
    meeting = meetings.get(meeting_id)
    if meeting is None:
        raise PermanentError(f"no meeting {meeting_id!r}")
    if ended_by is not None and ended_by != meeting.host_id and meeting.state != "ended":
        raise PermanentError(f"only the host can end meeting {meeting_id!r} ({ended_by!r} is not its host)")
    now = time.time()
    outcome = meetings.end(op, meeting_id, now=now, reason=reason, ended_by=ended_by, name=name)
    if outcome.get("already"):
        return {"meeting_id": meeting_id, "state": "ended", "already_ended": True, "reason": outcome.get("reason")}
    participants: list[str] = outcome["participants"]
    _cancel_pending(op, meeting.auto_end_task, *meetings.notices(meeting_id).values())
    started = float(outcome["started_at"]) if outcome.get("started_at") else None
    duration_s = round(now - started, 3) if started else 0.0
    # Discriminated by meeting: the beat sweep ends several meetings in one run.
    op.emit(CHANNEL, "meeting.ended", {"meeting_id": meeting_id, "reason": reason, "ended_by": ended_by,
                                       "participants": participants, "duration_s": duration_s},
            discriminator=meeting_id)
    for user_id in participants:
        op.emit(CHANNEL, "meeting.user_left", {"meeting_id": meeting_id, "user_id": user_id,
                                               "reason": "meeting ended"}, discriminator=f"{meeting_id}:{user_id}")
    return {"meeting_id": meeting_id, "state": "ended", "reason": reason, "participants": participants,
            "duration_s": duration_s}


def _cancel_pending(op: Operation, *task_ids: str | None) -> None:
    """Cancel tasks that have not started (never the running one: cancelling it would revoke itself)."""
    client = op.redis
    for task_id in task_ids:
        if not task_id or task_id == current_task_id() or task_id == op.task_id:
            continue
        record = op.platform.status.get(client, task_id)
        if record is not None and record.status in _WAITING:
            with contextlib.suppress(TaskNotFound):  # expired meanwhile
                cancel_task(op.platform, task_id)


@task_type(SERVICE, "meeting_create", payload=MeetingCreate, priority=Priority.HIGH,
           client=True, subject_field="host_id")
def meeting_create(p: MeetingCreate) -> dict[str, Any]:
    def body(op: Operation) -> dict[str, Any]:
        meeting_id = p.meeting_id or op.derive_id("meeting")
        now = time.time()
        start_at = now
        if p.start_time is not None:  # a time without a zone is taken as UTC
            start = p.start_time if p.start_time.tzinfo else p.start_time.replace(tzinfo=UTC)
            start_at = start.timestamp()
        fields = {"title": p.title, "host_id": p.host_id, "state": "scheduled", "record": "1" if p.record else "0",
                  "max_duration_s": str(p.max_duration_s), "start_at": repr(start_at), "created_at": repr(now)}
        outcome = store().create(op, meeting_id, fields)
        if outcome.get("taken"):
            raise PermanentError(f"meeting id {meeting_id!r} is taken")
        op.emit(CHANNEL, "meeting.created", {"meeting_id": meeting_id, "title": p.title, "host_id": p.host_id,
                                             "start_at": start_at, "max_duration_s": p.max_duration_s})
        result: dict[str, Any] = {"meeting_id": meeting_id, "title": p.title, "host_id": p.host_id,
                                  "start_at": start_at}
        if start_at <= now:
            result.update(start_meeting(op, meeting_id))
        else:
            start_task = op.derive_id("start")
            Dispatcher(op.platform).dispatch("meeting_start", {"meeting_id": meeting_id}, eta=_eta(start_at),
                                             task_id=start_task)
            result.update(state="scheduled", start_task_id=start_task)
        return result

    result: dict[str, Any] = run_once(SERVICE, body)
    return result


@task_type(SERVICE, "meeting_start", payload=MeetingStart, priority=Priority.HIGH)
def meeting_start(p: MeetingStart) -> dict[str, Any]:
    result: dict[str, Any] = run_once(SERVICE, lambda op: start_meeting(op, p.meeting_id))
    return result


@task_type(SERVICE, "meeting_end", payload=MeetingEnd, priority=Priority.HIGH,
           client=True, subject_field="ended_by")
def meeting_end(p: MeetingEnd) -> dict[str, Any]:
    result: dict[str, Any] = run_once(
        SERVICE, lambda op: end_meeting(op, p.meeting_id, reason=p.reason, ended_by=p.ended_by))
    return result


# --- participants ---------------------------------------------------------------------------------------------
_JOIN_REFUSALS = {
    "unknown": "no meeting {m!r}",
    "scheduled": "meeting {m!r} has not started yet",
    "ended": "meeting {m!r} has ended",
    "full": "meeting {m!r} is full (meeting_max_participants)",
}


@task_type(SERVICE, "meeting_user_join", payload=MeetingUserJoin, priority=Priority.CRITICAL,
           client=True, subject_field="user_id")
def meeting_user_join(p: MeetingUserJoin) -> dict[str, Any]:
    def body(op: Operation) -> dict[str, Any]:
        record = op.platform.status.get(op.redis, op.task_id)
        client = record.fields.get("client") if record is not None else None
        outcome = store().join(op, p.meeting_id, p.user_id, {"joined_at": time.time(), "client": client})
        refused = outcome.get("refused")
        if refused:
            raise PermanentError(_JOIN_REFUSALS.get(refused, "meeting {m!r} is " + refused).format(m=p.meeting_id))
        result: dict[str, Any] = {"meeting_id": p.meeting_id, "user_id": p.user_id,
                                  "participants": int(outcome.get("count", 0))}
        if outcome.get("already"):
            result["already_joined"] = True
            return result
        if client:
            result["notices"] = arm_notices(op, p.meeting_id, p.user_id, client, NOTICE_KINDS)
        op.emit(CHANNEL, "meeting.user_joined", {"meeting_id": p.meeting_id, "user_id": p.user_id,
                                                 "participants": result["participants"]})
        return result

    result: dict[str, Any] = run_once(SERVICE, body)
    return result


def arm_notices(op: Operation, meeting_id: str, user_id: str, client: str, kinds: tuple[str, ...],
                ids: dict[str, str] | None = None) -> dict[str, str]:
    """Schedule a notice per kind for ``client``, due at the meeting's automatic end; kind -> task id."""
    meetings = store()
    meeting = meetings.get(meeting_id)
    if meeting is None or meeting.state == "ended":
        return {}
    due = meeting.ends_at or (time.time() + meeting.max_duration_s)
    spec = REGISTRY.get("meeting_notify")
    dispatcher = Dispatcher(op.platform)
    armed = {}
    for kind in kinds:
        task_id = (ids or {}).get(kind) or op.derive_id(f"notice:{user_id}:{kind}")
        dispatcher.dispatch("meeting_notify", {"meeting_id": meeting_id, "user_id": user_id, "kind": kind},
                            eta=_eta(due), priority=spec.priority, task_id=task_id, fields={"client": client})
        meetings.set_notice(meeting_id, user_id, kind, task_id)
        armed[kind] = task_id
    return armed


@task_type(SERVICE, "meeting_user_leave", payload=MeetingUserLeave, priority=Priority.HIGH,
           client=True, subject_field="user_id")
def meeting_user_leave(p: MeetingUserLeave) -> dict[str, Any]:
    def body(op: Operation) -> dict[str, Any]:
        meetings = store()
        outcome = meetings.leave(op, p.meeting_id, p.user_id, {"left_at": time.time()})
        refused = outcome.get("refused")
        if refused == "not_in":
            raise PermanentError(f"{p.user_id!r} is not in meeting {p.meeting_id!r}")
        if refused:
            raise PermanentError(_JOIN_REFUSALS.get(refused, "meeting {m!r} is " + refused).format(m=p.meeting_id))
        mine = {f: t for f, t in meetings.notices(p.meeting_id).items() if f.startswith(p.user_id + "|")}
        _cancel_pending(op, *mine.values())
        meetings.drop_notices(p.meeting_id, list(mine))
        op.emit(CHANNEL, "meeting.user_left", {"meeting_id": p.meeting_id, "user_id": p.user_id, "reason": "left"})
        return {"meeting_id": p.meeting_id, "user_id": p.user_id, "participants": int(outcome.get("count", 0))}

    result: dict[str, Any] = run_once(SERVICE, body)
    return result


# --- AI results and notices -----------------------------------------------------------------------------------
@task_type(SERVICE, "meeting_ai_result", payload=MeetingAIResult, priority=Priority.NORMAL)
def meeting_ai_result(p: MeetingAIResult) -> dict[str, Any]:
    def body(op: Operation) -> dict[str, Any]:
        meetings = store()
        result = {**p.result, "stored_at": time.time()}
        outcome = meetings.store_ai(op, p.meeting_id, p.kind, result)
        if outcome.get("refused"):
            raise PermanentError(f"no meeting {p.meeting_id!r} to keep a {p.kind} result on")
        notices = list(meetings.notices(p.meeting_id, p.kind).values())
        deliver_now(op, notices)
        return {"meeting_id": p.meeting_id, "kind": p.kind, "notified": len(notices)}

    result: dict[str, Any] = run_once(SERVICE, body)
    return result


def deliver_now(op: Operation, notice_ids: list[str]) -> None:
    """Make pending notices due now: their delayed-set entries move to the head (``ZADD XX``, so a notice
    already moved or cancelled is left alone); the pump queues them within one pump interval."""
    if not notice_ids:
        return
    spec = REGISTRY.get("meeting_notify")
    key = op.platform.keys.delayed(spec.service, spec.priority.value)
    now_ms = int(time.time() * 1000)
    op.redis.zadd(key, dict.fromkeys(notice_ids, now_ms), xx=True)


@task_type(SERVICE, "meeting_notify", payload=MeetingNotify, priority=Priority.HIGH)
def meeting_notify(p: MeetingNotify) -> dict[str, Any]:
    def body(op: Operation) -> dict[str, Any]:
        meetings = store()
        meeting = meetings.get(p.meeting_id)
        result = meetings.ai_result(p.meeting_id, p.kind)
        out: dict[str, Any] = {"meeting_id": p.meeting_id, "user_id": p.user_id, "kind": p.kind,
                               "available": result is not None, "result": result}
        record = op.platform.status.get(op.redis, op.task_id)
        client = record.fields.get("client") if record is not None else None
        if meeting is not None and meeting.state == "live" and client:
            following = op.derive_id("next")
            arm_notices(op, p.meeting_id, p.user_id, client, (p.kind,), ids={p.kind: following})
            out["next_notice_id"] = following
        return out

    result: dict[str, Any] = run_once(SERVICE, body)
    return result


@task_type(SERVICE, "meeting_overdue_end", payload=MeetingOverdueEnd, priority=Priority.HIGH, timeout=120)
def meeting_overdue_end(p: MeetingOverdueEnd) -> dict[str, Any]:
    def body(op: Operation) -> dict[str, Any]:
        ended = []
        for meeting_id in store().overdue(time.time(), p.limit):
            outcome = end_meeting(op, meeting_id, reason="max_duration", ended_by=None, name=f"end:{meeting_id}")
            if not outcome.get("already_ended"):
                ended.append(meeting_id)
        return {"ended": ended}

    result: dict[str, Any] = run_once(SERVICE, body)
    return result


assert set(NOTICE_KINDS) <= set(get_args(AIKind))
