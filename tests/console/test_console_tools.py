"""The console's place for the tools: a task's priority and promote, Top, Profiles with a flame view,
and event replay with a dry-run preview, against a real `meetingtasks console` process, real Redis and, where a
task must run, real workers."""

from __future__ import annotations

import base64
import json
import re
import urllib.request
from collections.abc import Callable

import pytest
import redis

from meetingtasks import dispatch
from meetingtasks.console.flame import flame_of
from meetingtasks.events import publish_events
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status
from meetingtasks.worker.profiling import Profiles
from tests.console.conftest import PASSWORD, USER, ConsoleProcess
from tests.console.test_console_http import confirm_and_post
from tests.support.dispatcher_tasks import WORKER_ENV
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

EVENT_TASKS = "tests.support.event_tasks"
PROBE_A, PROBE_B = f"{EVENT_TASKS}:probe_a", f"{EVENT_TASKS}:probe_b"
PROFILE_INCLUDE = f"{WORKER_ENV['MEETINGTASKS_INCLUDE']},tests.support.profile_tasks"
SLOW_FUNCTION = "deliberately_slow_checksum"
NEW_POSTS = ["/task/priority", "/profiles/request", "/events/replay"]
NEW_GETS = ["/top", "/live/top", "/profiles", "/profiles?type=t_echo", "/profiles/t_echo/x", "/events/replay"]


def history(platform: Platform, r: redis.Redis, task_id: str) -> list[str]:
    record = platform.status.get(r, task_id)
    assert record is not None
    return [h["status"] for h in record.to_dict()["history"]]


# --- refusals ------------------------------------------------------------------------------------------------
def test_the_new_pages_and_actions_need_the_credentials_and_the_csrf_token(
    console: ConsoleProcess, platform: Platform, r: redis.Redis,
) -> None:
    for path in NEW_GETS:
        assert console.get(path, auth=None).status == 401, path
    for path in NEW_POSTS:
        assert console.post(path, {"task": "x"}, auth=None).status == 401, path
    low = dispatch("t_echo", {"tag": "stays-low"}, priority="low")
    forms: dict[str, dict[str, str | list[str]]] = {
        "/task/priority": {"task": low.id, "priority": "critical"},
        "/profiles/request": {"type": "t_echo", "runs": "3"},
        "/events/replay": {"channel": "user_events", "since": "0"},
    }
    for path, form in forms.items():
        for token in ({}, {"csrf_token": "0" * 64}):
            reply = console.post(path, {**form, **token, "confirmed": "1"})
            assert reply.status == 403 and "CSRF" in reply.body, (path, token)
    # Nothing happened: the task is still low, no profile requested, no replay recorded, nothing audited
    assert r.llen("ai.low") == 1 and r.llen("ai.critical") == 0
    assert not r.exists(platform.keys.profile_requests) and not r.exists(platform.keys.event_replays)
    assert console.get("/audit").body.count("<tr><td>") == 0


def test_bad_input_on_the_new_actions_says_why_in_one_line(console: ConsoleProcess) -> None:
    token = console.get("/dead-letters").csrf()
    cases = {
        "/task/priority": ({"task": "some-id", "priority": "urgent"}, "unknown+priority"),
        "/profiles/request": ({"type": "t_echo", "runs": "0"}, "runs+must+be+1+to+1000"),
        "/events/replay": ({"channel": "no_such_channel", "since": "0"}, "unknown+channel"),
    }
    for path, (form, said) in cases.items():
        reply = console.post(path, {**form, "csrf_token": token})
        assert reply.status == 303 and said in reply.headers["location"], (path, reply.headers.get("location"))
    reply = console.post("/events/replay", {"channel": "user_events", "since": "yesterday", "csrf_token": token})
    assert "is+not+epoch+seconds" in reply.headers["location"]
    assert console.get("/profiles?type=" + "x" * 300).status == 400
    assert console.get("/profiles/t_echo/no-such-profile").status == 404


# --- priority and promote ------------------------------------------------------------------------------------
def test_changing_the_priority_on_the_task_page_moves_a_queued_task_and_shows_in_its_history(
    console: ConsoleProcess, platform: Platform, r: redis.Redis,
) -> None:
    # Given a low task queued behind another low one (no worker: it stays queued)
    dispatch("t_echo", {"tag": "ahead"}, priority="low")
    handle = dispatch("t_echo", {"tag": "moved"}, priority="low")
    page = console.get(f"/task?id={handle.id}").body
    assert 'id="change-priority"' in page and 'id="promote"' not in page  # queued: not scheduled
    # When the operator changes it to critical there (confirmed)
    notice = confirm_and_post(console, "/task/priority", {"task": handle.id, "priority": "critical",
                                                           "back": f"/task?id={handle.id}"})
    # Then it left the low queue for the critical one, and its record and history say so
    assert notice == f"task {handle.id} (QUEUED) moved from low to critical in its queue"
    assert r.llen("ai.low") == 1 and r.llen("ai.critical") == 1
    assert json.loads(r.lindex("ai.critical", 0))["headers"]["id"] == handle.id  # type: ignore[arg-type]
    assert history(platform, r, handle.id) == ["QUEUED", "QUEUED"]
    page = console.get(f"/task?id={handle.id}").body
    assert page.count('<li data-status="QUEUED">') == 2 and "· critical" in page
    audit = console.get("/audit").body
    assert "<td>reprioritize</td>" in audit and f"move task {handle.id} to priority critical" in audit
    # And a started or finished task is refused in one line, nothing changed
    platform.status.transition(r, handle.id, Status.STARTED, attempt=1)
    notice = confirm_and_post(console, "/task/priority", {"task": handle.id, "priority": "low"})
    assert notice.startswith(f"refused: task {handle.id} already STARTED") and r.llen("ai.critical") == 1


@pytest.mark.slow
def test_promote_on_the_task_page_makes_a_scheduled_task_run_on_a_worker(
    console: ConsoleProcess, platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given an ai worker and a task scheduled an hour from now
    start_worker("ai", env_overrides=WORKER_ENV)
    handle = dispatch("t_echo", {"tag": "promoted"}, delay=3600)
    page = console.get(f"/task?id={handle.id}").body
    assert 'id="promote"' in page and 'id="change-priority"' in page
    # When it is promoted from its page: the Scheduled page's run now, one path
    notice = confirm_and_post(console, "/scheduled/run-now", {"task": handle.id, "service": "ai",
                                                              "back": f"/task?id={handle.id}"})
    assert notice == f"task {handle.id} queued now"
    # Then the worker runs it now, not in an hour
    assert handle.wait(timeout=60) == {"tag": "promoted"}
    assert history(platform, r, handle.id)[:2] == ["SCHEDULED", "QUEUED"]
    # And promoting it again says it is not waiting any more
    notice = confirm_and_post(console, "/scheduled/run-now", {"task": handle.id, "service": "ai"})
    assert notice.startswith(f"task {handle.id} is not waiting any more")
    assert "run now" in console.get("/audit").body


# --- top -----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_top_page_shows_a_types_counts_after_a_known_load_and_streams_them(
    console: ConsoleProcess, platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given seven t_echo tasks and three failing t_fail tasks run by a real worker
    start_worker("ai", env_overrides=WORKER_ENV)
    echoes = [dispatch("t_echo", {"tag": f"top{i}"}) for i in range(7)]
    for handle in echoes:
        handle.wait(timeout=60)
    # Then the Top page's last minute shows exactly those seven started and succeeded
    def row(body: str, window: str, task_type: str) -> dict[str, int]:
        table = body.split(f'id="top-{window}"')[1].split("</table>")[0]
        found = re.search(rf'<tr data-type="{task_type}">(.*?)</tr>', table, re.S)
        assert found, table[:600]
        return {k: int(v) for k, v in re.findall(r'data-col="(\w+)">(\d+)<', found.group(1))}

    wait_for(lambda: 'data-type="t_echo"' in console.get("/top").body, 30, message="t_echo on the Top page")
    body = console.get("/top").body
    for window in ("minute", "hour"):
        assert row(body, window, "t_echo") == {"started": 7, "succeeded": 7, "failed": 0, "dead_lettered": 0,
                                               "retries": 0}, window
    # And the live stream sends the same table as a fragment for the page's "top-live" element
    request = urllib.request.Request(console.url + "/live/top")
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as stream:
        line = ""
        while not line.startswith("data: "):
            line = stream.readline().decode()
    data = json.loads(line[6:])
    assert data["target"] == "top-live" and row(data["html"], "minute", "t_echo")["succeeded"] == 7


# --- profiles ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_profile_requested_from_the_page_is_shown_as_a_flame_view_naming_the_slow_function(
    start_console: Callable[..., ConsoleProcess], platform: Platform, r: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    import tests.support.profile_tasks  # noqa: F401 - the type, to dispatch it from here

    console = start_console(MEETINGTASKS_INCLUDE=PROFILE_INCLUDE)
    start_worker("ai", env_overrides={"MEETINGTASKS_INCLUDE": PROFILE_INCLUDE,
                                      "MEETINGTASKS_PROFILE_POLL_INTERVAL_S": "0.2"})
    # When one run of t_profiled is requested on the Profiles page
    notice = confirm_and_post(console, "/profiles/request", {"type": "t_profiled", "runs": "1", "back": "/profiles"})
    assert notice.startswith("the next 1 run(s) of t_profiled will be profiled")
    assert '<tr data-type="t_profiled"><td>t_profiled</td><td class="n">1</td>' in console.get("/profiles").body
    # And runs follow (the worker learns of the request within its poll interval)
    n = 0

    def profiled() -> bool:
        nonlocal n
        n += 1
        dispatch("t_profiled", {"tag": f"p{n}", "busy_s": 0.2}).wait(timeout=60)
        return bool(Profiles(platform).kept("t_profiled"))

    wait_for(profiled, 90, message="a kept profile of t_profiled")
    # Then the page lists it, and its flame view names the handler's slow function with its file and line
    listed = console.get("/profiles?type=t_profiled").body
    link = re.search(r'class="open-profile" href="([^"]+)"', listed)
    assert link, listed[-1500:]
    page = console.get(link.group(1))
    assert page.status == 200 and '<svg id="flame"' in page.body
    assert f'data-function="{SLOW_FUNCTION}"' in page.body
    assert re.search(rf"{SLOW_FUNCTION} <tspan class=\"loc\">tests/support/profile_tasks\.py:\d+</tspan>", page.body)
    # And the slow function's bar is most of its caller's (the handler's) width
    shares = {name: float(width) for width, name in re.findall(r'width="([\d.]+)%" height="19" '
                                                              r'data-function="([^"]+)"', page.body)}
    assert shares[SLOW_FUNCTION] > 0.6 * shares["t_profiled"], shares
    assert "<script>" not in page.body and " style=" not in page.body  # nothing a CSP default-src 'self' blocks


def test_the_flame_view_merges_stacks_by_share_and_refuses_what_is_not_a_session() -> None:
    t, f = "MainThread\x00<thread>\x001", "\x00/app/jobs.py\x00"
    session = {"sys_path": ["/app"], "frame_records": [
        [[t, f"handler{f}10", f"slow{f}20\x01l12"], 0.6],
        [[t, f"handler{f}10", f"slow{f}20\x01l13"], 0.2],  # the same frame, called from another line: merged
        [[t, f"handler{f}10", f"fast{f}30"], 0.199],
        [[t, f"handler{f}10", f"tiny{f}40"], 0.001],  # under MIN_SHARE: left out
    ]}
    flame = flame_of(session)
    shown = {(b.depth, b.function, b.location, b.left, b.width) for b in flame.bars}
    assert shown == {(0, "MainThread", "<thread>", 0.0, 100.0), (1, "handler", "jobs.py:10", 0.0, 100.0),
                     (2, "slow", "jobs.py:20", 0.0, 80.0), (2, "fast", "jobs.py:30", 80.0, 19.9)}
    assert flame.depth == 3 and flame.total_s == pytest.approx(1.0)
    # The frames above where the profiler started (the same in every sample) are left out
    started = {**session, "start_call_stack": [t, f"handler{f}10\x01l3"]}
    trimmed = flame_of(started)
    assert [(b.depth, b.function) for b in trimmed.bars][:2] == [(0, "handler"), (1, "slow")]
    assert trimmed.above == 1 and trimmed.depth == 2
    with pytest.raises(ValueError, match="not a pyinstrument session"):
        flame_of({"frames": ["x"]})
    assert flame_of({"frame_records": [["garbage"], [[t], "nan-ish"]]}).bars == []


# --- event replay --------------------------------------------------------------------------------------------
def test_a_replay_previews_its_counts_per_subscription_then_queues_the_tasks_once(
    start_console: Callable[..., ConsoleProcess], platform: Platform, r: redis.Redis,
) -> None:
    console = start_console(MEETINGTASKS_INCLUDE=f"{WORKER_ENV['MEETINGTASKS_INCLUDE']},{EVENT_TASKS}")
    # Given five logins in the stream (no bridge: nothing ran; a replay runs the subscriptions over them)
    publish_events({"channel": "user_events", "type": "user.logged_in", "source": "test", "payload": {"n": n}}
                   for n in range(5))
    ids = [eid.decode() for eid, _ in r.xrange(platform.keys.event_stream("user_events"))]
    assert len(ids) == 5
    page = console.get("/events/replay").body
    assert 'id="replay-user_events"' in page and PROBE_A in page
    form: dict[str, str | list[str]] = {"channel": "user_events", "since": ids[1], "until": ids[3],
                                        "back": "/events/replay"}
    # When a replay of the 2nd to 4th event is asked: the confirmation is the dry run, per subscription
    token = console.get("/events/replay").csrf()
    asked = console.post("/events/replay", {**form, "csrf_token": token})
    assert asked.status == 200 and 'id="confirm"' in asked.body
    assert "3 event(s) in the window" in asked.body and "<strong>6</strong> affected" in asked.body
    for name in (PROBE_A, PROBE_B):
        assert f"{name}: 3 event(s), 3 task(s)" in asked.body
    assert r.llen("ai.normal") == 0 and r.llen("user.normal") == 0  # the preview queued nothing
    # And confirmed, it queues each subscription's task once per event of the window
    notice = confirm_and_post(console, "/events/replay", form)
    assert re.fullmatch(r"replayed 3 event\(s\) of user_events: queued 6 task\(s\) under generation \d+", notice)
    assert r.llen("ai.normal") == 3 and r.llen("user.normal") == 3
    queued = {json.loads(m)["headers"]["id"] for m in r.lrange("ai.normal", 0, -1)}
    assert len(queued) == 3
    # And the same replay again previews and queues nothing
    asked = console.post("/events/replay", {**form, "csrf_token": token})
    assert "done before" in asked.body and "<strong>0</strong> affected" in asked.body
    notice = confirm_and_post(console, "/events/replay", form)
    assert "nothing queued" in notice and r.llen("ai.normal") == 3 and r.llen("user.normal") == 3
    # Unless "again": a new generation, three more each
    notice = confirm_and_post(console, "/events/replay", {**form, "again": "1"})
    assert "queued 6 task(s)" in notice and r.llen("ai.normal") == 6
    audit = console.get("/audit").body
    assert audit.count("<td>replay events</td>") == 3 and f"replay user_events from {ids[1]} to {ids[3]}" in audit
    # And a confirmed POST naming what the replay refuses is a one-line notice, not an audit entry
    for bad, said in (({"channel": "nope"}, "unknown channel"), ({"subscription": PROBE_A + "x"}, "no subscription"),
                      ({"since": "soon"}, "is not epoch seconds")):
        reply = console.post("/events/replay", {**form, **bad, "csrf_token": token, "confirmed": "1"})
        assert reply.status == 303 and said.replace(" ", "+") in reply.headers["location"], (bad, reply.headers)
    assert console.get("/audit").body.count("<td>replay events</td>") == 3
