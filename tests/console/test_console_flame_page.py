"""A profile's flame view in a real headless Chromium: the server-drawn ``<svg>`` lays its bars out by share of
time, the slow function's bar spans most of its caller's, and the colours come from the stylesheet (no script,
no style attribute).

Needs Debian's ``chromium`` (``apt-get install -y chromium``); without it this test skips, and fails in CI (see
tests/support/tools.py). ``MEETINGTASKS_SCREENSHOTS=docs`` also writes its screenshot to
docs/console-flame.png (the one docs/console.md shows).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyinstrument import Profiler

from meetingtasks.console.flame import flame_of
from meetingtasks.store.platform import Platform
from meetingtasks.worker.profiling import Profile, Profiles
from tests.console.conftest import ConsoleProcess
from tests.console.test_console_page import open_page, sign_in
from tests.gateway.cdp import Browser
from tests.support.processes import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    browser = Browser(tmp_path / "chromium-profile", tmp_path / "chromium.log")
    yield browser
    browser.close()


def hash_for_a_while(seconds: float) -> None:
    digest, deadline = b"", time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        digest = hashlib.sha256(digest).digest()


def quick_step() -> None:
    hash_for_a_while(0.03)


def handler() -> None:
    hash_for_a_while(0.2)
    quick_step()


def test_the_flame_view_draws_bars_as_wide_as_their_share(console: ConsoleProcess, browser: Browser,
                                                           platform: Platform, tmp_path: Path) -> None:
    # Given a kept profile of a real run (pyinstrument's session, as a worker saves it)
    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    handler()
    session = profiler.stop()
    profile = Profile(id=uuid.uuid4().hex, task_type="t_flame", task_id="task-1", worker="here:1",
                      started_at=time.time(), duration_s=session.duration, error=None,
                      text=profiler.output_text(unicode=True, color=False), session=session.to_json())
    Profiles(platform).save(profile)
    # When its flame view is opened
    sign_in(browser)
    open_page(browser, f"{console.url}/profiles/t_flame/{profile.id}")
    bars = browser.evaluate("""JSON.stringify(Array.from(document.querySelectorAll('#flame svg.bar')).map((b) => {
        const box = b.querySelector('rect').getBoundingClientRect();  // the svg's own box includes its text
        return {name: b.dataset.function, x: box.left, width: box.width,
                fill: getComputedStyle(b.querySelector('rect')).fill,
                text: b.querySelector('text').textContent};
    }))""")
    drawn = json.loads(bars)
    width = browser.evaluate("document.getElementById('flame').getBoundingClientRect().width")
    by_name = {bar["name"]: bar for bar in drawn}
    # Then the handler's bar, its slow part and its quick step are drawn as wide as their shares of the samples
    # (what the samples say, not the sleeps' nominal 0.2 s and 0.03 s: a loaded machine stretches either)
    assert {"handler", "hash_for_a_while", "quick_step"} <= set(by_name), sorted(by_name)
    shares = {(b.function, b.depth): b.share for b in flame_of(profile.session).bars}
    handler_bar = by_name["handler"]
    slow = max((b for b in drawn if b["name"] == "hash_for_a_while"), key=lambda b: b["width"])
    quick = by_name["quick_step"]
    depth = {name: d for (name, d) in shares if name in ("handler", "quick_step")}
    assert handler_bar["width"] == pytest.approx(shares[("handler", depth["handler"])] * width, abs=2)
    assert quick["width"] == pytest.approx(shares[("quick_step", depth["quick_step"])] * width, abs=2)
    assert slow["width"] == pytest.approx(shares[("hash_for_a_while", depth["quick_step"])] * width, abs=2)
    assert slow["width"] > quick["width"] > 0
    assert quick["x"] >= slow["x"] + slow["width"] - 1  # after the slow part, not over it
    # And each bar names its function and file:line, coloured by the stylesheet
    assert "test_console_flame_page.py:" in by_name["handler"]["text"]
    assert all(bar["fill"].startswith("rgb(") and bar["fill"] != "rgb(0, 0, 0)" for bar in drawn)
    assert browser.evaluate("document.querySelectorAll('script:not([src]), [style]').length") == 0
    shot = browser.screenshot(tmp_path / "flame.png")
    if os.environ.get("MEETINGTASKS_SCREENSHOTS") == "docs":
        (ROOT / "docs" / "console-flame.png").write_bytes(shot.read_bytes())
