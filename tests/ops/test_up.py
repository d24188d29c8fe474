"""``meetingtasks up`` as a person runs it: in a directory, then other commands from the same directory."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.ops.conftest import Process, scrape, value
from tests.support.ports import unclaimed_port
from tests.support.waiting import wait_for


def descendants(pid: int) -> set[int]:
    table = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    children: dict[int, list[int]] = {}
    for child, parent in zip(table[::2], table[1::2], strict=True):
        children.setdefault(int(parent), []).append(int(child))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    left = set()
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
        if ") Z " not in stat:  # a zombie is gone, only not yet reaped by its (other) parent
            left.add(pid)
    return left


@pytest.fixture
def up_env(env: dict[str, str]) -> dict[str, str]:
    """No Redis URL and no data dir: `up` embeds Redis and uses ./.meetingtasks of its directory."""
    base = {k: v for k, v in env.items()
            if k not in ("MEETINGTASKS_REDIS_URL", "MEETINGTASKS_DATA_DIR", "MEETINGTASKS_ENCRYPTION_KEYS")}
    # Outside the ephemeral range: up's own Redis servers and Sentinels connect to each other before the last parts
    # bind, and an outgoing connection once took the console's port.
    return {**base, "MEETINGTASKS_GATEWAY_PORT": str(unclaimed_port()),
            "MEETINGTASKS_FLOWER_PORT": str(unclaimed_port()),
            "MEETINGTASKS_EXPORTER_PORT": str(unclaimed_port()), "MEETINGTASKS_CONSOLE_PORT": str(unclaimed_port()),
            "MEETINGTASKS_HEARTBEAT_INTERVAL_S": "0.5"}


@pytest.fixture
def cli_in(tmp_path: Path, up_env: dict[str, str]) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    def run(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "meetingtasks.cli", *args], cwd=tmp_path, env=up_env,
                              capture_output=True, text=True, timeout=timeout_s)

    yield run


def start_up(run_process: Callable[..., Process], up_env: dict[str, str], cwd: Path, *args: str) -> Process:
    return run_process(["meetingtasks", "up", "--concurrency", "1", *args], up_env, name="up", cwd=cwd)


@pytest.mark.slow
def test_up_runs_the_platform_a_dispatch_goes_through_and_sigterm_leaves_nothing(
    tmp_path: Path, up_env: dict[str, str], run_process: Callable[..., Process],
    cli_in: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    # Given `meetingtasks up` in an empty directory
    up = start_up(run_process, up_env, tmp_path).wait_log("parts ready", timeout_s=180)
    recorded = (tmp_path / ".meetingtasks" / "redis.url").read_text().strip()
    assert recorded.startswith("redis://127.0.0.1:") and recorded in up.log()
    for line in ("worker-ai", "beat", "bridge", "gateway", "flower", "exporter", "console"):
        assert f"ready  {line}" in up.log()
    processes = descendants(up.pid)
    assert len(processes) >= 11  # Redis, 5 workers with their pool children, beat, bridge, gateway, ...

    # When a task is dispatched from the CLI in the same directory (no URL configured)
    done = cli_in("dispatch", "t_echo", "--payload", '{"tag": "up"}', "--wait")

    # Then it ran, and stats, the exporter and Flower all see the platform
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.split("\n", 1)[1]) == {"tag": "up"}
    # and `up` generated the encryption key in the data directory (owner-only) that the user worker and the
    # CLI both read: a secret field goes through
    key_file = tmp_path / ".meetingtasks" / "encryption.keys"
    assert key_file.stat().st_mode & 0o777 == 0o600 and "generated an encryption key" in up.log()
    registered = cli_in("dispatch", "user_register", "--payload",
                        '{"username": "upper", "email": "u@example.org", "password": "up-password-1"}', "--wait")
    assert registered.returncode == 0, registered.stderr
    stats = cli_in("stats", "--json")
    assert stats.returncode == 0 and len(json.loads(stats.stdout)) == 20
    metrics_url = f"http://127.0.0.1:{up_env['MEETINGTASKS_EXPORTER_PORT']}/metrics"
    wait_for(lambda: value(scrape(metrics_url), "meetingtasks_tasks_succeeded_total", type="t_echo") == 1, 20,
             message="the exporter to count the task")
    wait_for(lambda: value(scrape(metrics_url), "meetingtasks_workers_alive") == 5, 20,
             message="five live workers in the exporter")
    auth = (tmp_path / ".meetingtasks" / "flower.auth").read_text().strip()
    request = urllib.request.Request(f"http://127.0.0.1:{up_env['MEETINGTASKS_FLOWER_PORT']}/api/tasks")
    request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    wait_for(lambda: any(t["name"] == "t_echo" for t in json.loads(urllib.request.urlopen(request).read()).values()),
             30, interval_s=0.5, message="flower to show the task")
    # and the console, behind the password `up` wrote in the data directory, charts the traffic
    console_file = tmp_path / ".meetingtasks" / "console.auth"
    assert console_file.stat().st_mode & 0o777 == 0o600
    console_url = f"http://127.0.0.1:{up_env['MEETINGTASKS_CONSOLE_PORT']}"
    assert f"console           {console_url}/" in up.log() and "password in" in up.log()
    series = urllib.request.Request(f"{console_url}/api/series")
    series.add_header("Authorization", "Basic " + base64.b64encode(console_file.read_text().strip().encode()).decode())
    wait_for(lambda: any(json.loads(urllib.request.urlopen(series).read())["charts"]["started"]["ai"]), 30,
             interval_s=0.5, message="the console to chart the task")

    # When `up` gets SIGTERM
    assert up.stop(signal.SIGTERM, timeout_s=60) == 0

    # Then every process it started is gone, and the recorded URL with them
    assert "stopped" in up.log()
    assert alive(processes) == set()
    assert not (tmp_path / ".meetingtasks" / "redis.url").exists()


@pytest.mark.slow
def test_a_part_that_dies_is_restarted(
    tmp_path: Path, up_env: dict[str, str], run_process: Callable[..., Process],
    cli_in: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    # Given a running platform
    up = start_up(run_process, up_env, tmp_path).wait_log("parts ready", timeout_s=180)
    before = up.log()

    # When the ai worker is killed
    # The part's main process leads its own process group (pool children share the command line).
    worker = next(pid for pid in descendants(up.pid)
                  if b"worker\0ai" in Path(f"/proc/{pid}/cmdline").read_bytes() and os.getpgid(pid) == pid)
    os.killpg(worker, signal.SIGKILL)

    # Then `up` says so, restarts it, and tasks of that service run again
    up.wait_log("worker-ai exited (-9)", timeout_s=30)
    wait_for(lambda: up.log().count("ready  worker-ai") == before.count("ready  worker-ai") + 1, 60,
             message="the ai worker to be ready again")
    assert "restarting (1/3)" in up.log()
    done = cli_in("dispatch", "t_echo", "--payload", '{"tag": "again"}', "--wait")
    assert done.returncode == 0, done.stderr


def test_a_taken_port_is_one_line_and_nothing_starts(
    tmp_path: Path, up_env: dict[str, str], run_process: Callable[..., Process],
) -> None:
    # Given the exporter's port is taken by someone else
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(up_env["MEETINGTASKS_EXPORTER_PORT"])))
        squatter.listen()

        # When `up` starts, Then it refuses at once with one line naming the part, the port and the setting
        up = start_up(run_process, up_env, tmp_path)
        assert up.proc.wait(timeout=60) == 1
    errors = [line for line in up.log().splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "exporter: port" in errors[0] and "MEETINGTASKS_EXPORTER_PORT" in errors[0]
    assert not (tmp_path / ".meetingtasks" / "redis").exists()  # not even Redis was started


@pytest.mark.slow
def test_a_part_that_cannot_start_is_reported_and_everything_is_stopped(
    tmp_path: Path, up_env: dict[str, str], run_process: Callable[..., Process],
) -> None:
    # Given a configuration naming a module that does not exist
    bad = {**up_env, "MEETINGTASKS_INCLUDE": "tests.support.tasks,no_such_module_anywhere"}

    # When `up` starts
    up = run_process(["meetingtasks", "up", "--concurrency", "1"], bad, name="up", cwd=tmp_path)
    pids: set[int] = set()
    while up.proc.poll() is None:
        pids |= descendants(up.pid)
        time.sleep(0.05)
    # Then it exits 1 with one error line naming the part and the module, and leaves nothing running
    assert up.proc.returncode == 1
    errors = [line for line in up.log().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "could not start" in errors[0] and "no_such_module_anywhere" in errors[0], errors
    assert pids and alive(pids) == set()
    assert not (tmp_path / ".meetingtasks" / "redis.url").exists()


@pytest.mark.slow
def test_up_ha_runs_on_a_sentinel_group_and_a_killed_primary_is_followed(
    tmp_path: Path, up_env: dict[str, str], run_process: Callable[..., Process],
    cli_in: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    # Given `meetingtasks up --ha`: a primary, a replica and three sentinels embedded
    up = start_up(run_process, up_env, tmp_path, "--ha").wait_log("try a failover", timeout_s=180)
    recorded = (tmp_path / ".meetingtasks" / "redis.url").read_text().strip()
    assert recorded.startswith("sentinel://127.0.0.1:") and recorded.endswith("/mymaster/0")
    processes = descendants(up.pid)
    assert cli_in("dispatch", "t_echo", "--payload", '{"tag": "before"}', "--wait").returncode == 0

    # When the primary is killed as `up` says
    hint = next(line for line in up.log().splitlines() if "try a failover" in line)
    os.kill(int(hint.split("kill -9 ")[1].split("`")[0]), signal.SIGKILL)

    # Then a dispatch from the same directory goes through again once the sentinels promoted the replica
    def dispatched() -> bool:
        return cli_in("dispatch", "t_echo", "--payload", '{"tag": "after"}', "--wait").returncode == 0

    wait_for(dispatched, 60, interval_s=0.5, message="a dispatch to go through after the failover")
    assert cli_in("stats", "--json").returncode == 0
    # and `up` stops everything on SIGTERM
    assert up.stop(signal.SIGTERM, timeout_s=60) == 0
    assert alive(processes) == set()
