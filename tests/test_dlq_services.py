"""`dlq` and `stats` with a service on its own Redis (``MEETINGTASKS_SERVICE_REDIS_URLS``): two real
redis-server instances, a real worker, the CLI as a shell user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from meetingtasks.core.settings import Settings
from meetingtasks.operations.embedded import RedisServer
from meetingtasks.store.deadletter import DeadLetter
from meetingtasks.store.platform import Platform
from tests.support.processes import ROOT
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess


@pytest.fixture
def ai_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "ai-redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def split_env(env: dict[str, str], ai_server: RedisServer) -> dict[str, str]:
    """The ai service on its own Redis; every other service on the default one."""
    return {**env, "MEETINGTASKS_SERVICE_REDIS_URLS": json.dumps({"ai": ai_server.url})}


@pytest.fixture
def split(split_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Platform:
    import tests.support.tasks  # noqa: F401 - registers the test task types

    for key, value in split_env.items():
        if key.startswith("MEETINGTASKS_"):
            monkeypatch.setenv(key, value)
    return Platform(Settings())


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meetingtasks", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def queued(client: redis.Redis) -> dict[str, int]:
    return {key.decode(): int(client.llen(key)) for key in client.scan_iter("*.*") if client.type(key) == b"list"}


@pytest.mark.slow
def test_dlq_and_stats_see_each_service_on_its_own_redis(
    split_env: dict[str, str], split: Platform, ai_server: RedisServer, start_worker: Callable[..., WorkerProcess],
) -> None:
    from meetingtasks.enqueue.dispatcher import Dispatcher

    default, ai = split.redis(), split.redis("ai")
    assert default.connection_pool.connection_kwargs["port"] != ai.connection_pool.connection_kwargs["port"]
    # given a dead letter of ai filed by its worker on ai's own Redis, and one of user on the default Redis
    start_worker("ai", env_overrides=split_env)
    handle = Dispatcher(split).dispatch("t_always_fails", {"tag": "split"})
    wait_for(lambda: split.dead_letters.count(ai, "ai") == 1, 30, message="ai's dead letter on its own Redis")
    user_letter = DeadLetter(id="user-letter", service="user", reason="RuntimeError", error="boom",
                             task_type="user_login", priority="high", queue="user.high", replayable=False)
    split.dead_letters.add(default, user_letter)
    assert split.dead_letters.count(default, "ai") == 0, "nothing of ai on the default Redis"

    # then list, list --service and show find both
    listed = json.loads(run(split_env, "dlq", "list", "--json").stdout)
    assert {(x["service"], x["id"]) for x in listed} == {("ai", handle.id), ("user", "user-letter")}
    only_ai = json.loads(run(split_env, "dlq", "list", "--service", "ai", "--json").stdout)
    assert [x["id"] for x in only_ai] == [handle.id]
    shown = run(split_env, "dlq", "show", handle.id)
    assert shown.returncode == 0 and json.loads(shown.stdout)["payload"]["tag"] == "split", shown.stderr
    # and stats counts ai's dead letter (stats reads each service's own Redis)
    stats = json.loads(run(split_env, "stats", "--json").stdout)
    assert sum(row["dead_lettered"] for row in stats if row["service"] == "ai") == 1

    # when the ai letter is replayed (healed first), it runs again on ai's Redis
    default.set("test:heal:split", 1)  # the test tasks keep their traces on the default Redis
    replayed = run(split_env, "dlq", "replay", handle.id)
    assert replayed.returncode == 0 and f"replayed {handle.id} -> ai.normal" in replayed.stdout, replayed.stderr
    wait_for(lambda: split.status.get(ai, handle.id) is not None
             and split.status.get(ai, handle.id).status == "SUCCEEDED", 30,  # type: ignore[union-attr]
             message="the replayed task to succeed")
    # and purge removes what is left on every server
    purged = run(split_env, "dlq", "purge")
    assert purged.returncode == 0 and "1 dead letters purged" in purged.stdout
    assert split.dead_letters.count(default, "user") == 0


@pytest.mark.parametrize("own_redis", [False, True], ids=["one Redis", "ai on its own Redis"])
def test_replay_refuses_a_letter_naming_another_services_queue(
    own_redis: bool, env: dict[str, str], split_env: dict[str, str], split: Platform,
) -> None:
    if not own_redis:
        split_env = env
        split = Platform(split.settings.model_copy(update={"service_redis_urls": {}}))
    default, ai = split.redis(), split.redis("ai")
    # given, in ai's dead-letter queue on ai's Redis, a letter whose message would go to user.normal
    envelope = {"body": "W10=", "content-encoding": "utf-8", "content-type": "application/json",
                "headers": {"lang": "py", "task": "user_status_change", "id": "forged", "retries": 0},
                "properties": {"delivery_tag": "forged",
                               "delivery_info": {"exchange": "", "routing_key": "user.normal"}}}
    letter = DeadLetter(id="forged", service="ai", reason="RuntimeError", error="x", task_id="forged",
                        task_type="user_status_change", priority="normal", queue="user.normal",
                        message=json.dumps(envelope), last_failure_at=time.time())
    split.dead_letters.add(ai, letter)
    # and a good ai letter beside it
    split.dead_letters.add(ai, replace(letter, id="good", task_id="good", task_type="t_echo", queue="ai.normal",
                                       message=json.dumps({**envelope, "headers": {**envelope["headers"],
                                                                                    "task": "t_echo", "id": "good"}})))

    # when it is replayed by id: one line, exit 1, nothing queued on either server, the letter kept
    out = run(split_env, "dlq", "replay", "forged")
    assert out.returncode == 1, out
    assert out.stderr.strip() == ("error: dead letter 'forged' of service 'ai' names queue 'user.normal' of another "
                                  "service; not replayed (purge it, and dispatch the task again if wanted)")
    assert queued(ai) == {} and queued(default) == {}  # (the same server when not own_redis)
    assert split.dead_letters.count(ai, "ai") == 2

    # and replay --all queues the good one only, says what it refused, and exits 1
    every = run(split_env, "dlq", "replay", "--all")
    assert every.returncode == 1
    assert "replayed good -> ai.normal" in every.stdout and "1 replayed, 1 refused" in every.stdout
    assert "names queue 'user.normal' of another service" in every.stderr
    assert queued(ai) == {"ai.normal": 1}
    if own_redis:
        assert queued(default) == {}
    assert [x.id for x in split.dead_letters.list(ai, "ai")] == ["forged"]
