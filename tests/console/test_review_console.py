"""Hostile review of the operator console: promises of docs/console.md the console broke
when it was written. A real `meetingtasks console` process on a real Redis."""

from __future__ import annotations

import base64
import html
import json
import re
import socket
import subprocess
import sys
import urllib.request

import pytest
import redis

from meetingtasks.store.platform import Platform
from tests.console.conftest import PASSWORD, USER, ConsoleProcess, console_env
from tests.console.test_console_http import add_letter
from tests.support.processes import ROOT


def notice_of(location: str) -> str:
    return urllib.request.unquote(location.partition("notice=")[2].replace("+", " "))


HIDDEN = re.compile(r'<input type="hidden" name="([^"]*)" value="([^"]*)">')


def button_form(confirmation: str) -> dict[str, str | list[str]]:
    """What the confirmation page's "Yes" button sends: its form's hidden fields, as a browser would."""
    fields: dict[str, list[str]] = {}
    for name, value in HIDDEN.findall(confirmation):
        fields.setdefault(html.unescape(name), []).append(html.unescape(value))
    return {name: values[0] if len(values) == 1 else values for name, values in fields.items()}


def test_a_purge_of_all_matching_removes_only_the_letters_its_confirmation_counted(
    console: ConsoleProcess, platform: Platform, r: redis.Redis,
) -> None:
    # Given three dead letters of a type, and an operator who asks to purge every one matching it
    for i in range(3):
        add_letter(platform, r, tag=f"seen{i}", task_type="t_record", reason="ValueError")
    token = console.get("/dead-letters").csrf()
    form: dict[str, str | list[str]] = {"scope": "matching", "type": "t_record", "csrf_token": token}
    asked = console.post("/dead-letters/purge", form)
    assert "purge every dead letter matching type=t_record: <strong>3</strong>" in asked.body
    # When two more of that type are dead-lettered while the confirmation page is open (a new incident: evidence
    # the operator has not seen), and the operator then presses "Yes, purge" (which sends the confirmation's form,
    # as a browser does: the reviewer's first version re-sent the first form, which the page's button does not)
    later = [add_letter(platform, r, tag=f"new{i}", task_type="t_record", reason="ValueError") for i in range(2)]
    pressed = button_form(asked.body)
    assert pressed["confirmed"] == "1" and pressed["type"] == "t_record"
    done = console.post("/dead-letters/purge", pressed)
    assert done.status == 303
    # Then what was purged is what the confirmation said (3), and the two letters nobody saw are still there
    assert notice_of(done.headers["location"]) == "purged 3 dead letter(s)"
    assert {letter.id for letter in platform.dead_letters.list(r, "ai")} == {letter.id for letter in later}
    # and the audit log records the count acted on
    assert json.loads(r.lindex(platform.keys.console_audit, 0))["count"] == 3


@pytest.mark.parametrize("path", ["/dead-letters?since=1e400", "/dead-letters?until=-1e308",
                                  "/scheduled?page=99999999999999999999999", "/audit?page=999999999999999999999"])
def test_a_filter_or_page_number_out_of_range_is_a_400_with_one_line_not_a_500(
    console: ConsoleProcess, path: str,
) -> None:
    # Given a filter time or page number that parses as a number but is out of any range (a typo, a fuzzer)
    # When the page is asked for
    reply = console.get(path)
    # Then it is the console's one-line bad-input page (app.py: "a filter or page number that does not parse: one
    # line, the page is otherwise fine"), not starlette's bare 500 with a traceback in the console's log
    assert reply.status == 400, (reply.status, reply.body[:200])


def test_cancel_from_the_page_of_a_task_known_only_by_its_dead_letter_says_why_not_500(
    console: ConsoleProcess, platform: Platform, r: redis.Redis,
) -> None:
    # Given a task whose status record has expired but whose dead letter is kept (the task page finds it by that,
    # pages.py task_view) and shows its "Cancel this task" button
    letter = add_letter(platform, r, tag="expired")
    page = console.get(f"/task?id={letter.id}")
    assert page.status == 200 and 'id="cancel"' in page.body
    # When the operator presses it and confirms
    form: dict[str, str | list[str]] = {"task": letter.id, "back": f"/task?id={letter.id}",
                                        "csrf_token": page.csrf()}
    asked = console.post("/task/cancel", form)
    done = console.post("/task/cancel", {**form, "confirmed": "1"}) if asked.status == 200 else asked
    # Then the console goes back with a one-line notice (as for every other refused action), not a bare 500
    assert done.status == 303, (done.status, done.body[:200])
    assert "no task" in notice_of(done.headers["location"])


@pytest.mark.parametrize("path", ["/dead-letters", "/scheduled", "/task"])
def test_the_pages_with_action_buttons_cannot_be_framed_by_another_site(console: ConsoleProcess, path: str) -> None:
    # Given the pages whose buttons replay, purge and cancel (the CSRF token is in the page, so a forged POST fails;
    # but a page of another site can show the console's own page in an invisible frame, the browser sending the
    # cached basic-auth credentials, and lead the operator's two clicks onto "Purge" and "Yes, purge")
    reply = console.get(path)
    assert reply.status == 200
    # Then the console forbids framing: X-Frame-Options DENY/SAMEORIGIN or a CSP frame-ancestors
    headers = {k.lower(): v for k, v in reply.headers.items()}
    framing = headers.get("x-frame-options", "").upper()
    csp = headers.get("content-security-policy", "")
    assert framing in ("DENY", "SAMEORIGIN") or "frame-ancestors" in csp, headers


def test_a_taken_port_is_one_error_line_and_exit_1_like_the_exporters(redis_url: str) -> None:
    # Given the console's port is taken by another process
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        # When the console starts on it
        out = subprocess.run([sys.executable, "-m", "meetingtasks", "console", "--port", str(port)],
                             env=console_env(redis_url), cwd=ROOT, capture_output=True, text=True, timeout=60)
    # Then, as `meetingtasks exporter` does ("error: exporter: cannot listen on ...; choose another with --port"),
    # it exits 1 with one error line naming the port and how to choose another (not uvicorn's log lines, exit 3)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 1, (out.returncode, out.stderr[-800:])
    assert len(errors) == 1 and str(port) in errors[0] and "--port" in errors[0], out.stderr[-800:]


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_running_open_without_auth_is_refused_on_an_interface_other_machines_reach(redis_url: str, host: str) -> None:
    # Given no basic auth and MEETINGTASKS_CONSOLE_ALLOW_NO_AUTH=true ("only on a trusted, local interface")
    env = console_env(redis_url, MEETINGTASKS_CONSOLE_BASIC_AUTH="", MEETINGTASKS_CONSOLE_ALLOW_NO_AUTH="true")
    # When the console is asked to listen on every interface
    out = subprocess.run([sys.executable, "-m", "meetingtasks", "console", "--host", host, "--port", "0"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    # Then it refuses with one line saying what to set, and exits 1 (it never listened)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 1, (out.returncode, out.stderr[-800:])
    assert len(errors) == 1 and "loopback" in errors[0] and "MEETINGTASKS_CONSOLE_BASIC_AUTH" in errors[0], errors


def test_a_live_task_gone_while_watched_ends_its_stream_with_one_line(
    console: ConsoleProcess, platform: Platform, r: redis.Redis,
) -> None:
    # Given a task page's live stream, for a task known only by its dead letter, that has sent the task once
    letter = add_letter(platform, r, tag="watched")
    req = urllib.request.Request(f"{console.url}/live/task?id={letter.id}")
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
    with urllib.request.urlopen(req, timeout=60) as stream:
        assert stream.status == 200
        while b"event: html" not in stream.readline():
            pass
        # When the letter is purged while the page is open (its task is then known nowhere)
        platform.dead_letters.remove(r, "ai", [letter.id])
        # Then the stream says so in the task's place, one line, and ends (no exception in the streaming response:
        # reading to the end would raise IncompleteRead)
        rest = stream.read().decode()
    assert "event: html" in rest and "no dead letter with id" in rest, rest[-400:]
