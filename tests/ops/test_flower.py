"""Flower over all services: it sees a real worker and the task it ran, behind basic auth."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.operations.embedded import free_port
from meetingtasks.store.platform import Platform
from tests.ops.conftest import Process
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

AUTH = "ops:s3cret-flower"


def get(url: str, auth: str | None = AUTH) -> Any:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_flower_shows_workers_and_tasks_of_every_service_with_basic_auth(
    platform: Platform, env: dict[str, str], run_process: Callable[..., Process],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given workers of two services and one Flower started the documented way, auth from our settings
    start_worker("ai")
    start_worker("user")
    port = free_port()
    run_process(["celery", "-A", "meetingtasks.operations.flower", "flower", f"--port={port}", "--address=127.0.0.1"],
                {**env, "MEETINGTASKS_FLOWER_BASIC_AUTH": AUTH}, name="flower")
    base = f"http://127.0.0.1:{port}"

    def workers() -> Any:
        try:
            found = get(f"{base}/api/workers?refresh=1")
        except OSError:
            return None
        return found if len(found) == 2 else None

    found = wait_for(workers, 60, interval_s=0.5, message="flower to list both workers")
    queues = sorted(q["name"] for w in found.values() for q in w.get("active_queues", []))  # type: ignore[union-attr]
    assert "ai.critical" in queues and "user.low" in queues

    # When tasks of both services run
    d = Dispatcher(platform)
    echo = d.dispatch("t_echo", {"tag": "flower"})
    user = d.dispatch("user_register", {"username": "flo", "email": "flo@example.com", "password": "pw-123456"})
    echo.wait(timeout=30)
    user.wait(timeout=30)

    # Then Flower's task list has both, succeeded, with the worker that ran them
    def seen() -> Any:
        tasks = get(f"{base}/api/tasks")
        done = {tid: t for tid, t in tasks.items() if tid in (echo.id, user.id) and t["state"] == "SUCCESS"}
        return done if len(done) == 2 else None

    done = wait_for(seen, 30, interval_s=0.5, message="flower to show both tasks succeeded")
    assert done[echo.id]["name"] == "t_echo"  # type: ignore[index]
    assert done[user.id]["name"] == "user_register"  # type: ignore[index]

    # and without the password it answers 401
    with pytest.raises(urllib.error.HTTPError) as refused:
        get(f"{base}/api/tasks", auth=None)
    assert refused.value.code == 401


def test_flower_refuses_to_open_without_authentication_unless_told(env: dict[str, str]) -> None:
    import subprocess
    import sys

    bare = {k: v for k, v in env.items() if "FLOWER" not in k}
    refused = subprocess.run([sys.executable, "-m", "celery", "-A", "meetingtasks.operations.flower", "flower",
                              "--port=1"], env=bare, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "Flower would open without authentication" in refused.stderr
    from meetingtasks.core.settings import Settings
    from meetingtasks.operations.flower import apply_basic_auth

    apply_basic_auth(Settings(redis_url=env["MEETINGTASKS_REDIS_URL"], flower_allow_no_auth=True))  # no error


def test_the_flower_command_of_earlier_releases_still_loads_the_app(env: dict[str, str]) -> None:
    import subprocess
    import sys

    # Given a deployment that starts Flower as earlier releases documented it (before the package was grouped by
    # layer), with no authentication configured so that the app's own check answers before any port opens
    bare = {k: v for k, v in env.items() if "FLOWER" not in k}
    started = subprocess.run([sys.executable, "-m", "celery", "-A", "meetingtasks.flower", "flower", "--port=1"],
                             env=bare, capture_output=True, text=True, timeout=60)
    # Then Celery found our Flower app there: its refusal, not "Unable to load celery application"
    assert "Flower would open without authentication" in started.stderr, started.stderr[-2000:]
