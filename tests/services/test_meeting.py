"""The meeting service's handlers on a real Redis: lifecycle through the delayed set, participants,
AI results and notices; refusals; redelivered tasks that change and publish nothing twice."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import redis

from meetingtasks import PermanentError
from meetingtasks.services.meeting.store import MeetingStore
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status
from tests.services.conftest import Published, Run

MEETING = {"host_id": "ann", "title": "Planning", "meeting_id": "m1"}


def delayed(platform: Platform, r: redis.Redis, task_id: str) -> float | None:
    return platform.delayed.due_time_s(r, "meeting", task_id)


def test_create_without_start_time_starts_now_and_schedules_its_end(run: Run, platform: Platform, r: redis.Redis,
                                                                   published: Published) -> None:
    # when a meeting of at most 10 minutes is created with no start time
    result = run("meeting_create", {**MEETING, "max_duration_s": 600})

    # then it is live, its automatic end waits in the delayed set for start + 600 s
    meeting = MeetingStore(platform).get("m1")
    assert meeting is not None and meeting.state == "live" and result["state"] == "live"
    assert meeting.auto_end_task is not None
    due = delayed(platform, r, meeting.auto_end_task)
    assert due is not None and abs(due - (meeting.started_at or 0) - 600) < 1
    assert platform.status.get(r, meeting.auto_end_task).status is Status.SCHEDULED  # type: ignore[union-attr]
    assert published.types("meeting_events") == ["meeting.created", "meeting.started"]


def test_create_with_a_start_time_schedules_the_start(run: Run, platform: Platform, r: redis.Redis,
                                                      published: Published) -> None:
    start = datetime.now(UTC) + timedelta(hours=1)

    result = run("meeting_create", {**MEETING, "start_time": start.isoformat()})

    assert result["state"] == "scheduled"
    assert MeetingStore(platform).get("m1").state == "scheduled"  # type: ignore[union-attr]
    assert abs(delayed(platform, r, result["start_task_id"]) - start.timestamp()) < 1  # type: ignore[operator]
    assert published.types("meeting_events") == ["meeting.created"]
    # and the scheduled start, when it runs, makes it live
    started = run("meeting_start", {"meeting_id": "m1"})
    assert started["started"] is True and published.types("meeting_events")[-1] == "meeting.started"


def test_create_refuses_a_taken_id_and_is_idempotent(run: Run, r: redis.Redis, platform: Platform,
                                                     published: Published) -> None:
    first = run("meeting_create", MEETING, task_id="c-1")
    assert run("meeting_create", MEETING, task_id="c-1") == first  # redelivery: same meeting, no new events
    assert published.types("meeting_events") == ["meeting.created", "meeting.started"]
    assert r.zcard(platform.keys.delayed("meeting", "high")) == 1  # one automatic end, not two
    with pytest.raises(PermanentError, match="meeting id 'm1' is taken"):
        run("meeting_create", MEETING, task_id="c-2")


def test_join_and_leave(run: Run, platform: Platform, published: Published) -> None:
    run("meeting_create", MEETING)
    joined = run("meeting_user_join", {"meeting_id": "m1", "user_id": "bob"})
    run("meeting_user_join", {"meeting_id": "m1", "user_id": "cat"})
    left = run("meeting_user_leave", {"meeting_id": "m1", "user_id": "bob"})

    assert joined["participants"] == 1 and left["participants"] == 1
    assert set(MeetingStore(platform).participants("m1")) == {"cat"}
    assert published.types("meeting_events")[2:] == ["meeting.user_joined", "meeting.user_joined",
                                                      "meeting.user_left"]


@pytest.mark.parametrize("case,error", [
    ("unknown", "no meeting 'm1'"),
    ("scheduled", "meeting 'm1' has not started yet"),
    ("ended", "meeting 'm1' has ended"),
])
def test_join_refuses_unknown_unstarted_and_ended_meetings(run: Run, published: Published, case: str,
                                                           error: str) -> None:
    if case == "scheduled":
        run("meeting_create", {**MEETING, "start_time": (datetime.now(UTC) + timedelta(hours=1)).isoformat()})
    if case == "ended":
        run("meeting_create", MEETING)
        run("meeting_end", {"meeting_id": "m1"})
    with pytest.raises(PermanentError, match=error):
        run("meeting_user_join", {"meeting_id": "m1", "user_id": "bob"})
    assert published("meeting_events", "meeting.user_joined") == []


def test_join_delivered_twice_adds_the_participant_once(run: Run, published: Published) -> None:
    run("meeting_create", MEETING)
    first = run("meeting_user_join", {"meeting_id": "m1", "user_id": "bob"}, task_id="j-1")
    second = run("meeting_user_join", {"meeting_id": "m1", "user_id": "bob"}, task_id="j-1")
    third = run("meeting_user_join", {"meeting_id": "m1", "user_id": "bob"}, task_id="j-2")  # a second join
    assert first == second and third["already_joined"] is True
    assert len(published("meeting_events", "meeting.user_joined")) == 1


def test_leave_refusals_and_redelivery(run: Run, published: Published) -> None:
    run("meeting_create", MEETING)
    with pytest.raises(PermanentError, match="'bob' is not in meeting 'm1'"):
        run("meeting_user_leave", {"meeting_id": "m1", "user_id": "bob"})
    run("meeting_user_join", {"meeting_id": "m1", "user_id": "bob"})
    first = run("meeting_user_leave", {"meeting_id": "m1", "user_id": "bob"}, task_id="l-1")
    assert run("meeting_user_leave", {"meeting_id": "m1", "user_id": "bob"}, task_id="l-1") == first
    assert len(published("meeting_events", "meeting.user_left")) == 1


def test_end_everyone_leaves_and_the_automatic_end_is_cancelled(run: Run, platform: Platform, r: redis.Redis,
                                                                published: Published) -> None:
    run("meeting_create", MEETING)
    for user in ("bob", "cat"):
        run("meeting_user_join", {"meeting_id": "m1", "user_id": user})
    auto_end = MeetingStore(platform).get("m1").auto_end_task  # type: ignore[union-attr]

    result = run("meeting_end", {"meeting_id": "m1", "ended_by": "ann"}, task_id="e-1")
    assert run("meeting_end", {"meeting_id": "m1", "ended_by": "ann"}, task_id="e-1") == result

    assert sorted(result["participants"]) == ["bob", "cat"]
    assert MeetingStore(platform).get("m1").state == "ended"  # type: ignore[union-attr]
    assert platform.status.get(r, auto_end).status is Status.CANCELLED  # type: ignore[arg-type,union-attr]
    ended = published.payloads("meeting_events", "meeting.ended")
    assert len(ended) == 1 and sorted(ended[0]["participants"]) == ["bob", "cat"]
    assert len(published("meeting_events", "meeting.user_left")) == 2
    # the automatic end (or anyone) ending it again is a quiet no-op
    assert run("meeting_end", {"meeting_id": "m1", "reason": "max_duration"})["already_ended"] is True
    assert len(published("meeting_events", "meeting.ended")) == 1


def test_end_refusals(run: Run) -> None:
    with pytest.raises(PermanentError, match="no meeting 'nope'"):
        run("meeting_end", {"meeting_id": "nope"})
    run("meeting_create", MEETING)
    with pytest.raises(PermanentError, match="only the host can end meeting 'm1'"):
        run("meeting_end", {"meeting_id": "m1", "ended_by": "mallory"})


def test_overdue_meetings_are_ended_by_the_beat_job(run: Run, platform: Platform, r: redis.Redis,
                                                    published: Published) -> None:
    # given two live meetings, one of them past its automatic end (its scheduled end was lost)
    run("meeting_create", MEETING)
    run("meeting_create", {**MEETING, "meeting_id": "m2"})
    r.zadd(platform.keys.meetings_live, {"m1": time.time() - 5})

    result = run("meeting_overdue_end", {}, task_id="sweep-1")
    assert run("meeting_overdue_end", {}, task_id="sweep-1") == result

    assert result == {"ended": ["m1"]}
    assert MeetingStore(platform).get("m2").state == "live"  # type: ignore[union-attr]
    ended = published.payloads("meeting_events", "meeting.ended")
    assert [(e["meeting_id"], e["reason"]) for e in ended] == [("m1", "max_duration")]


def test_ai_results_are_kept_on_the_meeting_and_wake_the_notices(run: Run, platform: Platform,
                                                                 r: redis.Redis) -> None:
    # given a participant with a pending transcript notice (as joining through the gateway arms it)
    run("meeting_create", MEETING)
    store = MeetingStore(platform)
    ends_at = store.get("m1").ends_at  # type: ignore[union-attr]
    from meetingtasks.enqueue.dispatcher import Dispatcher

    Dispatcher(platform).dispatch("meeting_notify", {"meeting_id": "m1", "user_id": "bob",
                                                     "kind": "speech_recognition"},
                                  delay=3600, task_id="n-1", fields={"client": "bob-client"})
    store.set_notice("m1", "bob", "speech_recognition", "n-1")
    assert ends_at is not None and delayed(platform, r, "n-1") is not None

    # when the transcript arrives
    result = run("meeting_ai_result", {"meeting_id": "m1", "kind": "speech_recognition",
                                       "result": {"text": "hello"}}, task_id="ai-1")

    # then it is kept, and the notice is due now (the pump queues it at its next tick)
    assert result["notified"] == 1
    assert store.ai_result("m1", "speech_recognition")["text"] == "hello"  # type: ignore[index]
    assert delayed(platform, r, "n-1") <= time.time()  # type: ignore[operator]
    with pytest.raises(PermanentError, match="no meeting 'ghost'"):
        run("meeting_ai_result", {"meeting_id": "ghost", "kind": "emotion_detection", "result": {}})


def test_a_notice_delivers_the_latest_result_and_arms_the_next(run: Run, platform: Platform,
                                                               r: redis.Redis) -> None:
    run("meeting_create", MEETING)
    run("meeting_ai_result", {"meeting_id": "m1", "kind": "emotion_detection", "result": {"label": "happy"}})
    from meetingtasks.enqueue.dispatcher import Dispatcher

    Dispatcher(platform).dispatch("meeting_notify", {"meeting_id": "m1", "user_id": "bob",
                                                     "kind": "emotion_detection"},
                                  task_id="n-1", fields={"client": "bob-client"})

    result = run("meeting_notify", {"meeting_id": "m1", "user_id": "bob", "kind": "emotion_detection"},
                 task_id="n-1")

    assert result["available"] is True and result["result"]["label"] == "happy"
    following = result["next_notice_id"]
    record = platform.status.get(r, following)
    assert record is not None and record.status is Status.SCHEDULED and record.fields["client"] == "bob-client"
    assert MeetingStore(platform).notices("m1") == {"bob|emotion_detection": following}
