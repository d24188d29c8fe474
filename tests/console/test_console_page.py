"""The console in a real headless Chromium against a running platform (worker, exporter, console): find a dead
letter, read its traceback, replay it from the page and see the task succeed; actions without the CSRF token are
refused; nothing is shown without the credentials; the overview's charts and live rows.

Needs Debian's ``chromium`` (``apt-get install -y chromium``); without it these tests skip, and fail in CI (see
tests/support/tools.py). ``MEETINGTASKS_SCREENSHOTS=docs`` also writes the overview's screenshot to
docs/console-overview.png (the one the README shows).
"""

from __future__ import annotations

import base64
import json
import os
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from meetingtasks import dispatch
from meetingtasks.metrics import Exporter
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status
from tests.console.conftest import PASSWORD, USER, ConsoleProcess
from tests.gateway.cdp import Browser
from tests.support.dispatcher_tasks import WORKER_ENV
from tests.support.processes import ROOT
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.slow

AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    browser = Browser(tmp_path / "chromium-profile", tmp_path / "chromium.log")
    yield browser
    browser.close()


def sign_in(browser: Browser) -> None:
    """Every request of the page (navigation, fetch, EventSource) carries the console's basic auth."""
    browser.call("Network.enable")
    browser.call("Network.setExtraHTTPHeaders", headers={"Authorization": AUTH})


def open_page(browser: Browser, url: str) -> None:
    browser.navigate(url)
    browser.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")


def click(browser: Browser, selector: str) -> None:
    browser.evaluate(f"document.querySelector({json.dumps(selector)}).click()")


def test_nothing_shows_without_the_credentials(console: ConsoleProcess, browser: Browser) -> None:
    for path in ("/", "/dead-letters", "/task"):
        # Headless Chromium cannot answer the basic-auth challenge: it shows its error page instead of ours
        browser.navigate(console.url + path)
        browser.wait_for("location.href.startsWith('chrome-error://') && document.readyState === 'complete'")
        assert browser.evaluate("document.querySelector('nav') === null")
    sign_in(browser)
    open_page(browser, console.url + "/dead-letters")
    assert browser.evaluate("document.querySelector('nav a.on').textContent") == "Dead letters"


def test_an_operator_finds_a_dead_letter_reads_its_traceback_and_replays_it_from_the_page(
    console: ConsoleProcess, browser: Browser, start_worker: Callable[..., WorkerProcess], platform: Platform,
    r: redis.Redis,
) -> None:
    start_worker("ai", "--pool", "threads", "--concurrency", "2", env_overrides=WORKER_ENV)
    handle = dispatch("t_always_fails", {"tag": "from-the-console"})
    wait_for(lambda: (rec := platform.status.get(r, handle.id)) is not None and rec.status is Status.DEAD_LETTERED,
             60, message="the task dead-lettered")
    sign_in(browser)
    # Given the dead letters page
    open_page(browser, f"{console.url}/dead-letters?type=t_always_fails")
    assert browser.evaluate("document.getElementById('total').textContent") == "1"
    # When the operator opens the letter, the traceback and reason are there
    click(browser, f"tr[data-id='{handle.id}'] a.letter-link")
    browser.wait_for("document.getElementById('traceback') !== null")
    assert "RuntimeError: always fails: from-the-console" in browser.evaluate(
        "document.getElementById('traceback').textContent")
    assert browser.evaluate("document.getElementById('reason').textContent") == "RuntimeError"
    # And, the cause fixed, replays it: a confirmation first, then the replay
    r.set("test:heal:from-the-console", "1")
    click(browser, "#replay")
    browser.wait_for("document.getElementById('confirm') !== null")
    assert "replay 1 selected dead letter(s)" in browser.evaluate("document.getElementById('confirm-what').textContent")
    click(browser, "#confirm")
    notice = browser.wait_for("document.getElementById('notice') && document.getElementById('notice').textContent")
    assert notice == "replayed 1 dead letter(s)"
    # Then the task runs again and succeeds, and its page shows the whole story, live
    assert handle.wait(timeout=60) == "healed"
    open_page(browser, f"{console.url}/task?id={handle.id}")
    browser.wait_for("document.getElementById('status').dataset.status === 'SUCCEEDED'")
    history = browser.evaluate("[...document.querySelectorAll('#timeline li')].map(li => li.dataset.status)")
    assert history[0] == "QUEUED" and "DEAD_LETTERED" in history and history[-3:] == ["QUEUED", "STARTED", "SUCCEEDED"]
    # And the audit log names who replayed what
    open_page(browser, f"{console.url}/audit")
    assert f"{USER}\treplay\treplay 1 selected dead letter(s): ai/{handle.id}\t1" in browser.evaluate(
        "document.querySelector('table.audit tbody tr').innerText")


def test_a_post_without_the_csrf_token_is_refused(console: ConsoleProcess, browser: Browser, platform: Platform,
                                                  r: redis.Redis) -> None:
    handle = dispatch("t_echo", {"tag": "waiting"}, delay=3600)
    sign_in(browser)
    open_page(browser, f"{console.url}/scheduled?service=ai&priority=normal")
    assert browser.evaluate(f"document.querySelector(\"tr[data-id='{handle.id}']\") !== null")
    # A forged form (what another site's page could send with the operator's credentials): no token
    status = browser.evaluate(f"""fetch('/scheduled/cancel', {{method: 'POST',
        body: new URLSearchParams({{task: '{handle.id}', confirmed: '1'}})}}).then(r => r.status)""")
    assert status == 403
    assert platform.status.get(r, handle.id).status is Status.SCHEDULED  # type: ignore[union-attr]
    # The page's own button, with the token, asks and then cancels
    browser.evaluate(f"document.querySelector(\"tr[data-id='{handle.id}'] button.cancel\").click()")
    browser.wait_for("document.getElementById('confirm') !== null")
    click(browser, "#confirm")
    assert "CANCELLED" in browser.wait_for("document.getElementById('notice') && "
                                           "document.getElementById('notice').textContent")
    assert platform.status.get(r, handle.id).status is Status.CANCELLED  # type: ignore[union-attr]


def test_the_overview_draws_the_last_hour_and_updates_live(
    console: ConsoleProcess, browser: Browser, start_worker: Callable[..., WorkerProcess], platform: Platform,
    r: redis.Redis, tmp_path: Path,
) -> None:
    start_worker("ai", "--pool", "threads", "--concurrency", "2", env_overrides=WORKER_ENV)
    exporter = Exporter(platform, host="127.0.0.1", port=0).start()
    try:
        for handle in [dispatch("t_echo", {"tag": f"traffic-{i}"}) for i in range(40)]:
            handle.wait(timeout=60)
        dispatch("t_echo", {"tag": "later"}, delay=3600)

        def recorded() -> bool:
            request = urllib.request.Request(console.url + "/api/series", headers={"Authorization": AUTH})
            with urllib.request.urlopen(request, timeout=10) as reply:
                series = json.loads(reply.read())
            return bool(series["recorded"]) and any(series["charts"]["started"]["ai"])

        wait_for(recorded, 30, message="the exporter's rollup of the traffic")
        sign_in(browser)
        browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=1560, deviceScaleFactor=1, mobile=False)
        open_page(browser, console.url + "/")
        browser.wait_for("document.body.dataset.chartsDrawn")
        assert browser.evaluate("document.querySelectorAll('.chart canvas').length") == 6
        assert browser.evaluate("document.getElementById('chart-note').textContent") == ""
        # The rows are re-sent by the server as they change: a new dead letter appears without a reload
        scheduled = "document.querySelector(\"#overview-rows tr[data-service='ai'][data-priority='normal'] " \
                    "[data-col='scheduled']\").textContent"
        assert browser.evaluate(scheduled) == "1"
        dispatch("t_echo", {"tag": "later-2"}, delay=3600)
        browser.wait_for(f"{scheduled} === '2'")
        shot = browser.screenshot(tmp_path / "console-overview.png")
        if os.environ.get("MEETINGTASKS_SCREENSHOTS") == "docs":
            (ROOT / "docs" / "console-overview.png").write_bytes(shot.read_bytes())
    finally:
        exporter.stop()


def test_events_and_workers_pages_show_what_the_platform_records(
    console: ConsoleProcess, browser: Browser, start_worker: Callable[..., WorkerProcess], platform: Platform,
) -> None:
    worker = start_worker("ai", "--pool", "threads", "--concurrency", "2", env_overrides=WORKER_ENV)
    from meetingtasks import publish_event

    publish_event("meeting_events", "meeting.started", {"meeting_id": "m-1"}, source="console-test")
    sign_in(browser)
    open_page(browser, console.url + "/events")
    assert browser.evaluate("document.querySelector(\"#channels tr[data-channel='meeting_events'] "
                            "[data-col='length']\").textContent") == "1"
    assert "meeting.started" in browser.evaluate(
        "document.querySelector(\"table.events[data-channel='meeting_events']\").innerText")
    open_page(browser, console.url + "/workers")
    browser.wait_for("document.querySelector('#workers-table tbody tr') !== null", timeout_s=30)
    assert "alive" in browser.evaluate("document.querySelector('#workers-table tbody tr').innerText")
    assert browser.evaluate("document.getElementById('flower').href") == "http://127.0.0.1:5555/"
    assert worker.proc.poll() is None


def test_the_scheduled_pages_service_filter_applies_when_chosen_under_the_content_security_policy(
    console: ConsoleProcess, browser: Browser,
) -> None:
    # Given the scheduled page, served with a policy that forbids inline handlers (docs/console.md, headers.py)
    sign_in(browser)
    open_page(browser, f"{console.url}/scheduled?priority=low")
    # When the operator chooses a service in the filter
    browser.evaluate("(() => { const s = document.querySelector('select[name=service]');"
                     " s.dispatchEvent(new Event('change')); })()")
    # Then the form is submitted by console.js (an inline onchange would be blocked by the policy)
    browser.wait_for("location.search.includes('service=') && document.readyState === 'complete'")
    assert "priority=low" in browser.evaluate("location.search")
