"""Fixtures of the event tests: bridges in this process or as ``meetingtasks bridge`` subprocesses, and
readers of what they queued."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import tests.support.event_tasks  # noqa: F401 - the test subscriptions and task types, in this process too
from meetingtasks.core.message import loads
from meetingtasks.events.bridge import Bridge
from meetingtasks.store.platform import Platform
from tests.support.processes import PartProcess

EVENT_TASKS = "tests.support.event_tasks"
#: Settings that make re-claiming and reconnecting fast enough for tests.
FAST = {"bridge_claim_idle_s": 1.0, "bridge_claim_interval_s": 0.3, "bridge_block_s": 0.2,
        "reconnect_backoff_max_s": 1.0}


@pytest.fixture
def make_bridge(platform: Platform) -> Iterator[Callable[..., Bridge]]:
    """Factory: ``make_bridge(event_max_attempts=2)`` -> a started, ready bridge in this process."""
    bridges: list[Bridge] = []

    def make(start: bool = True, **overrides: Any) -> Bridge:
        settings = platform.settings.model_copy(update={**FAST, **overrides})
        bridge = Bridge(Platform(settings), includes=[EVENT_TASKS])
        bridges.append(bridge)
        if start:
            bridge.start()
            assert bridge.wait_ready(15), "bridge not ready within 15 s"
        return bridge

    yield make
    for bridge in bridges:
        bridge.stop()


class BridgeProcess(PartProcess):
    """A ``meetingtasks bridge`` subprocess with its log kept for assertions."""

    name = "bridge"

    def __init__(self, env: dict[str, str], log_path: Path, args: list[str]) -> None:
        super().__init__(self.cli("bridge", *args), env, log_path)

    def wait_ready(self, timeout_s: float = 30.0) -> BridgeProcess:
        return self.wait_log("bridge ready", timeout_s)


@pytest.fixture
def start_bridge(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., BridgeProcess]]:
    """Factory: ``start_bridge(env_overrides={...})`` -> a ready ``meetingtasks bridge`` subprocess."""
    procs: list[BridgeProcess] = []

    def start(*args: str, env_overrides: dict[str, str] | None = None, ready: bool = True) -> BridgeProcess:
        fast = {f"MEETINGTASKS_{k.upper()}": str(v) for k, v in FAST.items()}
        proc_env = {**env, **fast, **(env_overrides or {})}
        proc = BridgeProcess(proc_env, tmp_path / f"bridge-{len(procs)}.log", ["--include", EVENT_TASKS, *args])
        procs.append(proc)
        return proc.wait_ready() if ready else proc

    yield start
    for proc in procs:
        proc.stop()


def queued(r: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """The task messages waiting on ``queue``: ``{"id", "task", "event_id", "payload"}`` each."""
    out = []
    for raw in r.lrange(queue, 0, -1):
        envelope = loads(raw)
        headers = envelope["headers"]
        out.append({"id": headers["id"], "task": headers["task"], "event_id": headers.get("mt_event_id"),
                    "payload": loads(envelope["body"])[0][0]})
    return out


def triggers_per_event(r: redis.Redis, queue: str) -> Counter[str]:
    return Counter(msg["event_id"] for msg in queued(r, queue))
