"""Console fixtures: a `meetingtasks console` subprocess on a free port, and a small HTTP client with basic auth."""

from __future__ import annotations

import base64
import contextlib
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meetingtasks.operations.embedded import RedisServer, free_port
from tests.support.dispatcher_tasks import WORKER_ENV
from tests.support.processes import PartProcess
from tests.support.workers import worker_env

USER, PASSWORD = "operator", "console-test-password-0123456789"
CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


@dataclass
class Reply:
    status: int
    body: str
    headers: dict[str, str]

    def csrf(self) -> str:
        found = CSRF.search(self.body)
        assert found, f"no CSRF token in the page:\n{self.body[:500]}"
        return found.group(1)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # the tests look at the 303 itself


class ConsoleProcess(PartProcess):
    """A `meetingtasks console` subprocess; ``url`` is its base."""

    name = "console"

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(self.cli("console", "--port", str(self.port)), env, log_path)
        self.opener = urllib.request.build_opener(NoRedirect)

    def request(self, path: str, *, data: dict[str, str | list[str]] | None = None,
                auth: tuple[str, str] | None = (USER, PASSWORD), timeout_s: float = 30.0) -> Reply:
        body = None if data is None else urllib.parse.urlencode(data, doseq=True).encode()
        req = urllib.request.Request(self.url + path, data=body, method="POST" if data is not None else "GET")
        if auth is not None:
            req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
        try:
            with self.opener.open(req, timeout=timeout_s) as response:
                return Reply(response.status, response.read().decode(), dict(response.headers))
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, (exc.read() or b"").decode(errors="replace"), dict(exc.headers))

    def get(self, path: str, **kwargs: object) -> Reply:
        return self.request(path, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, data: dict[str, str | list[str]], **kwargs: object) -> Reply:
        return self.request(path, data=data, **kwargs)  # type: ignore[arg-type]

    def wait_ready(self, timeout_s: float = 60.0) -> ConsoleProcess:
        def healthy() -> bool:
            with contextlib.suppress(OSError):
                return self.get("/healthz", auth=None).status == 200
            return False

        return self.wait_until(healthy, timeout_s, "answer on /healthz")


def console_env(redis_url: str, **overrides: str) -> dict[str, str]:
    include = f"{WORKER_ENV['MEETINGTASKS_INCLUDE']},tests.support.secret_tasks"  # a type with a secret field
    return {**worker_env(redis_url), **WORKER_ENV, "MEETINGTASKS_INCLUDE": include,
            "MEETINGTASKS_CONSOLE_BASIC_AUTH": f"{USER}:{PASSWORD}", **overrides}


@pytest.fixture
def start_console(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., ConsoleProcess]]:
    """Factory: ``start_console(MEETINGTASKS_X="...")`` -> a console answering on /healthz."""
    started: list[ConsoleProcess] = []

    def start(**overrides: str) -> ConsoleProcess:
        process = ConsoleProcess(console_env(redis_url, **overrides), tmp_path / f"console-{len(started)}.log")
        started.append(process)
        return process.wait_ready()

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="module")
def shared_console(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleProcess]:
    """One console for a module's tests: it reads the session's Redis, which each test empties (``redis_url``)."""
    process = ConsoleProcess(console_env(redis_server.url), tmp_path_factory.mktemp("console") / "console.log")
    try:
        yield process.wait_ready()
    finally:
        process.stop()


@pytest.fixture
def console(shared_console: ConsoleProcess, redis_url: str) -> ConsoleProcess:
    return shared_console


def wait_status(check: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)
