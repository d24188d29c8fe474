"""The meeting scenario end to end: five real workers, a bridge and a gateway as subprocesses, and
``meetingtasks demo`` as a client of them."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from meetingtasks.operations.embedded import free_port
from meetingtasks.services import SERVICES
from meetingtasks.services.meeting.store import MeetingStore
from meetingtasks.services.signaling.store import SignalingStore
from meetingtasks.services.user.store import UserStore
from meetingtasks.store.platform import Platform
from tests.events.conftest import FAST, BridgeProcess
from tests.gateway.conftest import SECRET, GatewayProcess
from tests.support.processes import ROOT
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess


def demo(env: dict[str, str], *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meetingtasks.cli", "demo", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout_s)


@pytest.mark.slow
def test_the_demo_runs_the_meeting_over_real_workers_bridge_and_gateway(
        env: dict[str, str], platform: Platform, r: redis.Redis, start_worker: Callable[..., WorkerProcess],
        tmp_path: Path) -> None:
    # given the platform's parts as separate processes: a worker per service, the bridge, the gateway
    part_env = {**env, "MEETINGTASKS_GATEWAY_SECRET": SECRET,
                **{f"MEETINGTASKS_{k.upper()}": str(v) for k, v in FAST.items()}}
    for service in SERVICES:
        start_worker(service, "--pool", "threads", "--concurrency", "2", env_overrides=part_env)
    bridge = BridgeProcess(part_env, tmp_path / "bridge.log", [])
    gateway = GatewayProcess(part_env, tmp_path / "gateway.log")
    try:
        bridge.wait_ready()
        gateway.wait_ready()

        # when the demo runs against them
        proc = demo(part_env, "--gateway", gateway.ws_url, "--timeout", "120")
        logs = f"\n--- demo stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}\n--- bridge\n{bridge.log()[-3000:]}"

        # then every step happened: each client got the transcript and the emotion pushed, the recording stopped
        assert proc.returncode == 0, logs
        out = proc.stdout
        assert "every step happened" in out, logs
        for person in ("alice", "bob", "carol"):
            assert re.search(rf"{person}: pushed transcript 'good morning everyone", out), logs
            assert re.search(rf"{person}: pushed emotion happy", out), logs
        for event in ("meeting.started", "recording.started", "speech_recognition.completed",
                      "emotion_detection.completed", "meeting.ended", "recording.stopped"):
            assert f"event {event}" in out, logs

        # and the subscriptions of meeting.ended finished the rest: sessions closed, everyone online again
        meeting_id = re.search(r"meeting ([0-9a-f-]{36})", out).group(1)  # type: ignore[union-attr]
        meeting = MeetingStore(platform)
        assert meeting.get(meeting_id).state == "ended"  # type: ignore[union-attr]
        users = list(r.hkeys(platform.keys.meeting_left(meeting_id)))
        assert len(users) == 3
        sessions, people = SignalingStore(platform), UserStore(platform)

        def states() -> list[tuple[str | None, str]]:
            return [(sessions.session(f"{meeting_id}:{u.decode()}").get("state"),
                     people.get(u.decode()).status) for u in users]  # type: ignore[union-attr]

        try:
            wait_for(lambda: states() == [("closed", "online")] * 3, 60,
                     message="signaling sessions closed and users online after the meeting")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: (session, presence) {states()}") from None
        assert meeting.ai_results(meeting_id)["emotion_detection"]["label"] == "happy"
        # and nothing on the way was dead-lettered
        assert [(d.service, d.error) for d in platform.dead_letters.list(r)] == []
    finally:
        bridge.stop()
        gateway.stop()


def test_the_demo_without_a_gateway_fails_in_one_line(env: dict[str, str], platform: Platform) -> None:
    proc = demo({**env, "MEETINGTASKS_GATEWAY_SECRET": SECRET}, "--gateway", f"ws://127.0.0.1:{free_port()}/ws",
                "--timeout", "5", timeout_s=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: demo failed: cannot connect to the gateway at ws://127.0.0.1:")
    assert len(proc.stderr.strip().splitlines()) == 1
