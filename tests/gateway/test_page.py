"""The page at / in a real headless Chromium: submit a task and watch its status arrive live.

Needs Debian's ``chromium`` (``apt-get install -y chromium``); without it this test skips, and fails in CI
(see tests/support/tools.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from meetingtasks.store.platform import Platform
from tests.gateway.cdp import Browser
from tests.gateway.conftest import GatewayProcess, token_for
from tests.support.dispatcher_tasks import WORKER_ENV
from tests.support.workers import WorkerProcess

# Slow tier: a real Chromium drives the page.
pytestmark = pytest.mark.slow

ROW = "document.querySelector('#tasks tr')"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    browser = Browser(tmp_path / "chromium-profile", tmp_path / "chromium.log")
    yield browser
    browser.close()


def test_page_submits_a_task_and_shows_its_status_live(
    gateway: GatewayProcess, start_worker: Callable[..., WorkerProcess], browser: Browser, r: redis.Redis,
    platform: Platform, tmp_path: Path,
) -> None:
    start_worker("ai", "--pool", "threads", "--concurrency", "2", env_overrides=WORKER_ENV)
    # Given the page opened with a token of client "page-user"
    browser.navigate(f"{gateway.url}/?token={token_for('page-user')}")
    browser.wait_for("document.getElementById('conn').textContent === 'connected'")
    assert browser.wait_for("document.getElementById('type').options.length") >= 15  # the client types
    # When the user picks t_echo, types a payload and presses Submit
    browser.evaluate("""(() => {
        const type = document.getElementById('type');
        type.value = 't_echo';
        type.onchange();
        document.getElementById('payload').value = JSON.stringify({tag: 'from the browser'});
        document.getElementById('submit').click();
    })()""")
    # Then the row gets its task id, goes through the statuses live and ends SUCCEEDED with the result
    task_id = browser.wait_for(f"{ROW} && {ROW}.dataset.id")
    assert browser.wait_for(f"{ROW}.dataset.status === 'SUCCEEDED'")
    assert browser.evaluate(f"{ROW}.dataset.history") == "QUEUED STARTED SUCCEEDED"
    # Coloured by its phase, and final, so without its Cancel button: the page read both from the definitions the
    # gateway put into it (meetingtasks.store.status_schema)
    assert browser.evaluate(f"{ROW}.querySelector('[data-col=status]').className") == "succeeded"
    assert browser.evaluate(f"{ROW}.querySelector('[data-col=action]').children.length") == 0
    outcome = browser.evaluate(f"{ROW}.querySelector('[data-col=outcome]').textContent")
    assert json.loads(outcome) == {"tag": "from the browser"}
    record = platform.status.get(r, task_id)
    assert record is not None and record.status == "SUCCEEDED" and record.fields["client"] == "page-user"
    # And a refused submit is shown on its row
    browser.evaluate("""(() => {
        document.getElementById('payload').value = '{}';
        document.getElementById('submit').click();
    })()""")
    assert "payload.tag: Field required" in browser.wait_for(
        f"{ROW}.dataset.id === undefined && {ROW}.querySelector('[data-col=outcome]').textContent")
    browser.screenshot(tmp_path / "page.png")
