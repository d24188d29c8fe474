"""A minimal Chrome DevTools Protocol driver for headless Chromium (Debian's ``chromium`` package).

Just enough to open a page, run JavaScript in it and take a screenshot; no npm, no browser download.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.support.tools import executable

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--remote-debugging-port=0", "--window-size=1200,800"]


def find_chromium() -> str:
    """Chromium from ``MEETINGTASKS_CHROMIUM`` or PATH; the test skips (fails in CI) without it."""
    return executable((os.environ.get("MEETINGTASKS_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"),
                      "chromium", "sudo apt-get install -y chromium")


class Browser:
    """One headless Chromium with one page; ``evaluate`` runs JavaScript in the page."""

    def __init__(self, profile_dir: Path, log_path: Path) -> None:
        self.profile_dir = profile_dir
        self.log_file = log_path.open("wb")
        self.proc = subprocess.Popen([find_chromium(), *FLAGS, f"--user-data-dir={profile_dir}", "about:blank"],
                                     stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True)
        self.ids = itertools.count(1)
        self.conn: ClientConnection = connect(self._page_ws_url(), max_size=None, open_timeout=30)

    def _page_ws_url(self, timeout_s: float = 30.0) -> str:
        port_file = self.profile_dir / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"chromium exited with {self.proc.returncode}")
            with contextlib.suppress(OSError, ValueError, IndexError):
                port = int(port_file.read_text().split()[0])
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
                    pages = [t for t in json.loads(response.read()) if t.get("type") == "page"]
                if pages:
                    return str(pages[0]["webSocketDebuggerUrl"])
            time.sleep(0.1)
        raise AssertionError(f"chromium's DevTools endpoint did not come up within {timeout_s}s")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        self.conn.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.conn.recv(timeout=30))
            if reply.get("id") == call_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply.get("result", {})  # type: ignore[no-any-return]

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(AssertionError):
                value = self.evaluate(expression)
                if value:
                    return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s}s waiting for: {expression}")
            time.sleep(0.05)

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log_file.close()
