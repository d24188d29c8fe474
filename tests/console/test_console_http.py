"""The console over plain HTTP against a real `meetingtasks console` process and Redis: every page and endpoint,
basic auth on all of them, CSRF and confirmation on every action, and what the actions do."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from meetingtasks import dispatch
from meetingtasks.core.message import encode_task_message, new_id
from meetingtasks.store.deadletter import DeadLetter, LetterFilter
from meetingtasks.store.platform import Platform
from meetingtasks.store.rollup import RollupRecorder, quantile_s, wait_bucket
from meetingtasks.store.status import Status
from tests.console.conftest import PASSWORD, USER, ConsoleProcess, console_env
from tests.support.processes import PartProcess

GET_PATHS = ["/", "/api/series", "/api/stats", "/dead-letters", "/scheduled", "/task", "/events", "/workers",
             "/audit", "/live/overview", "/live/events", "/live/workers", "/static/console.js",
             "/static/uPlot.iife.min.js", "/dead-letters/ai/some-id", "/task?id=x"]
POST_PATHS = ["/dead-letters/replay", "/dead-letters/purge", "/scheduled/cancel", "/scheduled/run-now",
              "/task/cancel"]


def add_letter(platform: Platform, r: redis.Redis, *, tag: str, task_type: str = "t_echo", reason: str = "RuntimeError",
               failed_at: float | None = None, payload: dict[str, object] | None = None) -> DeadLetter:
    task_id = new_id()
    body = payload or {"tag": tag}
    message = encode_task_message(task_id=task_id, task_name=task_type, payload=body, queue="ai.normal").decode()
    when = time.time() if failed_at is None else failed_at
    letter = DeadLetter(id=task_id, service="ai", reason=reason, error=f"RuntimeError: boom {tag}", task_id=task_id,
                        task_type=task_type, priority="normal", queue="ai.normal", payload=body,
                        traceback=f"Traceback (most recent call last):\n  raise RuntimeError('boom {tag}')\n",
                        attempts=3, first_failure_at=when - 1, last_failure_at=when, message=message)
    platform.dead_letters.add(r, letter)
    return letter


def confirm_and_post(console: ConsoleProcess, path: str, form: dict[str, str | list[str]]) -> str:
    """POST an action as the browser does: the confirmation page first, then its button; returns the notice."""
    token = console.get("/dead-letters").csrf()
    asked = console.post(path, {**form, "csrf_token": token})
    assert asked.status == 200 and 'id="confirm"' in asked.body, asked.body[:400]
    done = console.post(path, {**form, "csrf_token": token, "confirmed": "1"})
    assert done.status == 303, done.body[:400]
    location = done.headers["location"]
    return urllib.request.unquote(location.partition("notice=")[2].replace("+", " "))


# --- auth ----------------------------------------------------------------------------------------------------
def test_no_page_or_action_works_without_the_console_credentials(console: ConsoleProcess) -> None:
    for path in GET_PATHS:
        for auth in (None, (USER, "wrong-password"), ("intruder", PASSWORD)):
            reply = console.get(path, auth=auth)
            assert reply.status == 401, (path, auth, reply.status)
            assert reply.headers["www-authenticate"].startswith("Basic ")
    for path in POST_PATHS:
        assert console.post(path, {"task": "x"}, auth=None).status == 401, path
    assert console.get("/healthz", auth=None).body == "ok"  # the liveness probe shows nothing


@pytest.mark.slow
def test_the_console_refuses_to_start_without_auth_unless_allowed(redis_url: str, tmp_path: Path) -> None:
    env = console_env(redis_url, MEETINGTASKS_DATA_DIR=str(tmp_path / "empty"))
    env.pop("MEETINGTASKS_CONSOLE_BASIC_AUTH")
    refused = PartProcess(PartProcess.cli("console", "--port", "0"), env, tmp_path / "refused.log")
    assert refused.proc.wait(timeout=60) == 1
    lines = refused.log().strip().splitlines()
    assert lines == [lines[0]] and "MEETINGTASKS_CONSOLE_BASIC_AUTH=user:password" in lines[0], lines
    refused.stop()
    # The password file `up` writes in the data directory is enough
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "console.auth").write_text("admin:from-the-file-0123456789\n")
    from_file = ConsoleProcess({**env, "MEETINGTASKS_DATA_DIR": str(tmp_path / "data")}, tmp_path / "file.log")
    try:
        from_file.wait_ready()
        assert from_file.get("/", auth=("admin", "from-the-file-0123456789")).status == 200
        assert from_file.get("/", auth=None).status == 401
    finally:
        from_file.stop()
    # Explicitly allowed: open
    open_console = ConsoleProcess({**env, "MEETINGTASKS_CONSOLE_ALLOW_NO_AUTH": "true"}, tmp_path / "open.log")
    try:
        open_console.wait_ready()
        assert open_console.get("/", auth=None).status == 200
    finally:
        open_console.stop()


# --- pages ---------------------------------------------------------------------------------------------------
def test_every_page_renders(console: ConsoleProcess, platform: Platform, r: redis.Redis) -> None:
    letter = add_letter(platform, r, tag="shown")
    for path in ["/", "/dead-letters", "/scheduled", "/task", "/events", "/workers", "/audit",
                 f"/dead-letters/ai/{letter.id}", f"/task?id={letter.id}"]:
        reply = console.get(path)
        assert reply.status == 200, (path, reply.body[:300])
        assert "<nav>" in reply.body and USER in reply.body, path
    stats = json.loads(console.get("/api/stats").body)
    assert {"service": "ai", "priority": "normal", "queued": 0, "unacked": 0, "scheduled": 0,
            "dead_lettered": 1} in stats
    assert console.get("/static/uPlot.iife.min.js").body.startswith("/*! https://github.com/leeoniya/uPlot")
    assert console.get("/dead-letters/ai/no-such-letter").status == 404
    assert console.get("/dead-letters/nope/x").status == 404
    assert console.get("/task?id=no-such-task").status == 404
    assert console.get("/dead-letters?since=yesterday").status == 400
    assert console.get("/dead-letters?service=nope").status == 400


def test_a_dead_letter_shows_its_traceback_and_message_with_secrets_masked(
    console: ConsoleProcess, platform: Platform, r: redis.Redis,
) -> None:
    sealed = "mtenc1:0123abcd:gAAAAABnotarealtokenbutlooksliketheshape"
    letter = add_letter(platform, r, tag="secret", payload={"tag": "secret", "password": sealed})
    page = console.get(f"/dead-letters/ai/{letter.id}").body
    assert "raise RuntimeError(&#39;boom secret&#39;)" in page
    assert "RuntimeError: boom secret" in page and "ai.normal" in page
    assert sealed not in page and "gAAAAAB" not in page
    assert page.count("***") >= 2  # in the payload and in the original message
    # A field the task type declares secret, stored in plain text (by a foreign producer), is masked too
    plain = add_letter(platform, r, tag="plain", task_type="t_secret_hold",
                       payload={"tag": "plain", "api_key": "plain-text-api-key"})
    page = console.get(f"/dead-letters/ai/{plain.id}").body
    assert "&#34;api_key&#34;: &#34;***&#34;" in page and "plain-text-api-key" not in page


def test_dead_letters_filter_by_type_reason_and_time_and_page_with_a_cursor(
    console: ConsoleProcess, platform: Platform, r: redis.Redis,
) -> None:
    now = time.time()
    echo = [add_letter(platform, r, tag=f"e{i}", failed_at=now - i) for i in range(120)]
    other = [add_letter(platform, r, tag=f"o{i}", task_type="t_record", reason="ValueError", failed_at=now - i - 0.5)
             for i in range(30)]
    first = console.get("/dead-letters?type=t_echo")
    assert '<span id="total">120</span>' in first.body
    seen: list[str] = []
    page = first
    while True:
        seen += [line.split('data-id="')[1].split('"')[0] for line in page.body.splitlines() if 'data-id="' in line]
        if 'id="next-page"' not in page.body:
            break
        link = page.body.split('id="next-page" href="')[1].split('"')[0].replace("&amp;", "&")
        page = console.get(f"/dead-letters{link}")
    assert seen == [letter.id for letter in echo]  # newest first, each once, nothing else
    by_reason = console.get("/dead-letters?reason=ValueError").body
    assert '<span id="total">30</span>' in by_reason and other[0].id in by_reason and echo[0].id not in by_reason
    recent = console.get(f"/dead-letters?since={now - 9.9}").body
    assert '<span id="total">20</span>' in recent  # 10 of each within the last 9.9 s


def test_a_bounded_search_pages_through_every_match_once_across_services(platform: Platform, r: redis.Redis) -> None:
    now = time.time()
    wanted = []
    for i in range(60):
        service = "ai" if i % 3 else "user"
        letter = add_letter(platform, r, tag=f"b{i}", failed_at=now - i,
                            task_type="t_rare" if i % 7 == 0 else "t_echo")
        if service == "user":  # file a copy under the user service: the same time order, another Redis key
            r.hdel(platform.keys.dlq("ai"), letter.id)
            r.zrem(platform.keys.dlq_index("ai"), letter.id)
            platform.dead_letters.add(r, DeadLetter(**{**letter.__dict__, "service": "user"}))
        if i % 7 == 0:
            wanted.append(letter.id)
    flt = LetterFilter(task_type="t_rare")
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        page = platform.dead_letters.page(platform.service_clients(), None, flt, cursor, limit=3, read_at_most=5)
        seen += [letter.id for letter in page.letters]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == wanted  # newest first, each once, although most pages stopped reading before they were full


# --- actions -------------------------------------------------------------------------------------------------
def test_an_action_without_the_csrf_token_is_refused_and_does_nothing(
    console: ConsoleProcess, platform: Platform, r: redis.Redis,
) -> None:
    letter = add_letter(platform, r, tag="kept")
    form: dict[str, str | list[str]] = {"scope": "selected", "letter": f"ai/{letter.id}", "confirmed": "1"}
    for token in ({}, {"csrf_token": "0" * 64}, {"csrf_token": ""}):
        for path in ("/dead-letters/replay", "/dead-letters/purge"):
            reply = console.post(path, {**form, **token})
            assert reply.status == 403 and "CSRF" in reply.body, (path, token)
    assert console.post("/task/cancel", {"task": letter.id, "confirmed": "1"}).status == 403
    assert platform.dead_letters.count(r, "ai") == 1 and r.llen("ai.normal") == 0
    assert console.get("/audit").body.count("<tr><td>") == 0


def test_replaying_selected_letters_confirms_queues_them_and_is_audited(
    console: ConsoleProcess, platform: Platform, r: redis.Redis,
) -> None:
    letters = [add_letter(platform, r, tag=f"r{i}") for i in range(3)]
    chosen = [f"ai/{letters[0].id}", f"ai/{letters[2].id}"]
    notice = confirm_and_post(console, "/dead-letters/replay", {"scope": "selected", "letter": chosen,
                                                                "back": "/dead-letters"})
    assert notice == "replayed 2 dead letter(s)"
    assert r.llen("ai.normal") == 2 and platform.dead_letters.count(r, "ai") == 1
    audit = console.get("/audit").body
    assert f"<td>{USER}</td><td>replay</td>" in audit and "replay 2 selected dead letter(s)" in audit
    assert "<td class=\"n\">2</td>" in audit


def test_purging_everything_matching_a_filter_leaves_the_rest(
    console: ConsoleProcess, platform: Platform, r: redis.Redis,
) -> None:
    keep = [add_letter(platform, r, tag=f"k{i}") for i in range(5)]
    for i in range(700):  # more than one batch of the purge's walk
        add_letter(platform, r, tag=f"p{i}", task_type="t_record", reason="ValueError")
    token = console.get("/dead-letters").csrf()
    asked = console.post("/dead-letters/purge", {"scope": "matching", "type": "t_record", "csrf_token": token})
    assert "purge every dead letter matching type=t_record: <strong>700</strong>" in asked.body
    notice = confirm_and_post(console, "/dead-letters/purge", {"scope": "matching", "type": "t_record"})
    assert notice == "purged 700 dead letter(s)"
    assert platform.dead_letters.count(r, "ai") == 5
    assert {letter.id for letter in platform.dead_letters.list(r, "ai")} == {letter.id for letter in keep}


def test_replaying_all_matching_skips_what_cannot_be_replayed(
    console: ConsoleProcess, platform: Platform, r: redis.Redis,
) -> None:
    for i in range(4):
        add_letter(platform, r, tag=f"g{i}")
    platform.dead_letters.add(r, DeadLetter(id="broken", service="ai", reason="MalformedMessage", error="garbage",
                                            message=None, replayable=False))
    notice = confirm_and_post(console, "/dead-letters/replay", {"scope": "matching", "service": "ai"})
    assert notice == "replayed 4 dead letter(s), 1 refused (not replayable)"
    assert r.llen("ai.normal") == 4 and [letter.id for letter in platform.dead_letters.list(r, "ai")] == ["broken"]


def test_scheduled_lists_due_times_and_runs_now_or_cancels(
    console: ConsoleProcess, platform: Platform, r: redis.Redis,
) -> None:
    later = dispatch("t_echo", {"tag": "later"}, delay=3600)
    soon = dispatch("t_echo", {"tag": "soon"}, delay=600)
    page = console.get("/scheduled?service=ai&priority=normal").body
    assert page.index(soon.id) < page.index(later.id)  # due order
    assert "normal (2)" in page and "in 10m" in page and "t_echo" in page
    notice = confirm_and_post(console, "/scheduled/run-now", {"task": soon.id, "service": "ai"})
    assert notice == f"task {soon.id} queued now"
    assert r.llen("ai.normal") == 1 and platform.status.get(r, soon.id).status is Status.QUEUED  # type: ignore[union-attr]
    notice = confirm_and_post(console, "/scheduled/cancel", {"task": later.id})
    assert notice == f"{later.id}: CANCELLED (was SCHEDULED)"
    assert platform.delayed.count(r, "ai") == 0
    assert "nothing waiting" in console.get("/scheduled?service=ai").body
    audit = console.get("/audit").body
    assert "run now" in audit and f"cancel task {later.id}" in audit


def test_the_task_page_shows_the_history_payload_and_cancels(
    console: ConsoleProcess, platform: Platform, r: redis.Redis,
) -> None:
    handle = dispatch("t_echo", {"tag": "looked-up"}, delay=3600, on_success="t_record")
    page = console.get(f"/task?id={handle.id}").body
    assert 'data-status="SCHEDULED"' in page and "t_echo" in page and "on success: t_record" in page
    assert "looked-up" in page and "from the delayed set" in page
    notice = confirm_and_post(console, "/task/cancel", {"task": handle.id, "back": f"/task?id={handle.id}"})
    assert "CANCELLED" in notice
    page = console.get(f"/task?id={handle.id}").body
    assert '<li data-status="SCHEDULED">' in page and '<li data-status="CANCELLED">' in page


def test_an_action_on_bad_input_says_why_in_one_line(console: ConsoleProcess) -> None:
    token = console.get("/dead-letters").csrf()
    reply = console.post("/dead-letters/replay", {"scope": "selected", "csrf_token": token})
    assert reply.status == 303 and "error%3A+no+dead+letter+selected" in reply.headers["location"]
    reply = console.post("/scheduled/run-now", {"task": "x", "service": "nope", "csrf_token": token})
    assert "unknown+service" in reply.headers["location"]
    reply = console.post("/dead-letters/replay", {"scope": "selected", "letter": "ai/x", "csrf_token": token,
                                                  "back": "https://elsewhere.example/", "confirmed": "1"})
    assert reply.headers["location"].startswith("/dead-letters?")  # never sent to another site


# --- live and charts -----------------------------------------------------------------------------------------
def test_the_overview_stream_sends_the_rows_as_server_sent_events(
    console: ConsoleProcess, platform: Platform, r: redis.Redis,
) -> None:
    add_letter(platform, r, tag="live")
    request = urllib.request.Request(console.url + "/live/overview")
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = []
        while not any(line.startswith("data: ") for line in lines):
            lines.append(stream.readline().decode().rstrip("\n"))
    assert "event: html" in lines
    data = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
    assert data["target"] == "overview-rows" and 'data-col="dead_lettered"' in data["html"]


def test_the_task_stream_sends_each_change_of_the_task(console: ConsoleProcess, platform: Platform) -> None:
    from meetingtasks.store.cancel import cancel

    handle = dispatch("t_echo", {"tag": "streamed"}, delay=3600)
    request = urllib.request.Request(f"{console.url}/live/task?id={handle.id}")
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
    seen: list[str] = []
    with urllib.request.urlopen(request, timeout=30) as stream:
        while "CANCELLED" not in seen:
            line = stream.readline().decode()
            if line.startswith("data: "):
                html = json.loads(line[6:])["html"]
                seen.append(html.split('id="status" data-status="')[1].split('"')[0])
                if seen == ["SCHEDULED"]:
                    cancel(platform, handle.id)  # the next read sends the change
    assert seen == ["SCHEDULED", "CANCELLED"]
    assert console.get("/live/task?id=no-such-task").status == 404


def test_the_charts_read_the_rollup_the_exporter_writes(console: ConsoleProcess, platform: Platform) -> None:
    recorder = RollupRecorder(platform)
    now = time.time()
    for i in range(100):
        base = {"service": "ai", "priority": "normal", "time": now}
        recorder.observe({**base, "status": "STARTED", "wait_s": 0.004 if i < 90 else 2.0})
        recorder.observe({**base, "status": "SUCCEEDED" if i % 10 else "DEAD_LETTERED"})
    recorder.flush(now)
    series = json.loads(console.get("/api/series").body)
    assert series["recorded"] is True and len(series["minutes"]) == 60
    elapsed = max(1.0, time.time() - series["minutes"][-1])
    assert series["charts"]["started"]["ai"][-1] == pytest.approx(100 / elapsed, rel=0.2)
    assert series["charts"]["failed"]["ai"][-1] < series["charts"]["succeeded"]["ai"][-1]
    assert series["charts"]["wait_p50"]["ai"][-1] == 0.005 and series["charts"]["wait_p99"]["ai"][-1] == 2.5
    assert series["charts"]["depth"]["ai"][-1] == 0 and series["charts"]["started"]["user"][-1] is None
    assert console.get("/api/series?priority=nope").status == 400


def test_two_exporters_do_not_count_the_same_events_twice(platform: Platform, r: redis.Redis) -> None:
    first, second = RollupRecorder(platform), RollupRecorder(platform)
    now = time.time()
    for recorder in (first, second):  # both hear the same event on the status channel
        recorder.observe({"status": "SUCCEEDED", "service": "ai", "priority": "low", "time": now})
        recorder.flush(now)
    assert r.hget(platform.keys.rollup(int(now // 60)), "ai|low|succeeded") == b"1"
    assert 3_800 < r.ttl(platform.keys.rollup(int(now // 60))) <= 3_900  # kept an hour, then gone


def test_many_dead_letters_are_counted_on_one_row_not_split_by_priority(
    console: ConsoleProcess, platform: Platform, r: redis.Redis,
) -> None:
    with r.pipeline(transaction=False) as pipe:
        for i in range(2_001):
            platform.dead_letters.add(pipe, DeadLetter(id=f"many-{i}", service="media", reason="RuntimeError",
                                                      error="boom", priority="high"))
        pipe.execute()
    add_letter(platform, r, tag="few")
    rows = json.loads(console.get("/api/stats").body)
    media = {row["priority"]: row["dead_lettered"] for row in rows if row["service"] == "media"}
    assert media == {"critical": 0, "high": 0, "normal": 0, "low": 0, "all": 2_001}
    assert [row["dead_lettered"] for row in rows if row["service"] == "ai" and row["priority"] == "normal"] == [1]


def test_wait_quantiles_come_from_bucket_bounds() -> None:
    assert wait_bucket(0.0) == 0 and wait_bucket(0.004) == 2 and wait_bucket(10_000) == 17
    assert quantile_s({}, 0.5) is None
    assert quantile_s({2: 50, 9: 50}, 0.5) == 0.005 and quantile_s({2: 50, 9: 50}, 0.99) == 1.0
