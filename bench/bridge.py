"""Event published -> task queued, through a ``meetingtasks bridge`` process, at a steady event rate.

Starts its own redis-server (AOF everysec, loopback) and one bridge subprocess with the services'
subscriptions. This process publishes ``meeting.user_joined`` events with ``publish_event`` at ``--rate``
per second (each triggers three tasks: user_status_change, media_stream_process, signaling open) and
listens on the status channel: an event's latency is from its ``time`` (set at publish) to the moment the
QUEUED status of its media_stream_process task arrives, which Redis publishes inside the same
transaction that pushes the task onto its queue. Target: p99 under 20 ms at 1,000 events/s.

    python -m bench.bridge [--rate 1000] [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

from meetingtasks.core.settings import Settings
from meetingtasks.events import LiveMessage, LiveSubscriber
from meetingtasks.events.publisher import EventPublisher
from meetingtasks.events.subscriptions import SUBSCRIPTIONS, load_subscriptions
from meetingtasks.operations.embedded import RedisServer
from meetingtasks.store.platform import Platform

ROOT = Path(__file__).resolve().parent.parent
TARGET_P99_MS = 20.0
MEASURED = "meetingtasks.services.media.events:process_participant_stream"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def start_bridge(url: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEETINGTASKS_")}
    env.update(MEETINGTASKS_REDIS_URL=url, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "meetingtasks.cli", "bridge"], env=env, cwd=ROOT,
                            stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while "bridge ready" not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the bridge did not start:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.05)
    return proc


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(platform: Platform, rate: float, seconds: float) -> tuple[list[float], int]:
    """Latencies (ms) of every event of the round, and how many events never got their task."""
    sub = SUBSCRIPTIONS.get(MEASURED)
    sent: dict[str, float] = {}  # task id -> event time
    arrived: dict[str, float] = {}
    lock = threading.Lock()

    def on_status(message: LiveMessage) -> None:
        now = time.time()
        data = orjson.loads(message.data)
        if data.get("status") == "QUEUED":
            with lock:
                arrived.setdefault(data["id"], now)

    listener = LiveSubscriber(platform, [platform.keys.status_channel], callback=on_status).start()
    assert listener.wait_ready(10)
    publisher = EventPublisher(platform)
    total = int(rate * seconds)
    start = time.perf_counter()
    for n in range(total):
        while time.perf_counter() - start < n / rate:
            time.sleep(0.0002)
        event = publisher.publish("meeting_events", "meeting.user_joined",
                                  {"meeting_id": f"m{n % 100}", "user_id": f"u{n}"}, source="bench")
        sent[sub.task_id(event.id)] = event.time
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with lock:
            if len(arrived.keys() & sent.keys()) == total:
                break
        time.sleep(0.05)
    listener.stop()
    latencies = [(arrived[t] - sent[t]) * 1000 for t in sent if t in arrived]
    return latencies, total - len(latencies)


def run(rate: float, seconds: float, rounds: int) -> int:
    load_subscriptions()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        bridge = start_bridge(server.url, Path(tmp) / "bridge.log")
        try:
            platform = Platform(Settings(redis_url=server.url))
            one_round(platform, rate, 1.0)  # warm up: connections, script cache
            p50s, p99s, maxes, cpus, lost = [], [], [], [], 0
            for _ in range(rounds):
                used, began = cpu_s(bridge.pid), time.monotonic()
                latencies, missing = one_round(platform, rate, seconds)
                if not latencies:
                    log = (Path(tmp) / "bridge.log").read_text(errors="replace")
                    raise SystemExit(f"no event got its task in this round; the bridge's log:\n{log}")
                cpus.append(100 * (cpu_s(bridge.pid) - used) / (time.monotonic() - began))
                lost += missing
                p50s.append(statistics.median(latencies))
                p99s.append(percentile(latencies, 99))
                maxes.append(max(latencies))
        finally:
            bridge.terminate()
            bridge.wait(timeout=30)
            server.stop()

    def fmt(values: list[float]) -> str:
        return f"median {statistics.median(values):.2f} ms (min {min(values):.2f} - max {max(values):.2f})"

    print(f"bridge latency, event published -> task queued, {rate:,.0f} events/s for {seconds:.0f} s "
          f"x {rounds} rounds ({int(rate * seconds):,} events and {3 * int(rate * seconds):,} tasks per round):")
    print(f"  p50  {fmt(p50s)}")
    print(f"  p99  {fmt(p99s)}")
    print(f"  max  {fmt(maxes)}")
    print(f"  bridge CPU: median {statistics.median(cpus):.0f}% of one core (min {min(cpus):.0f} - max "
          f"{max(cpus):.0f}); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"  events without their task: {lost}")
    ok = statistics.median(p99s) < TARGET_P99_MS and lost == 0
    print(f"target: p99 < {TARGET_P99_MS:.0f} ms at 1,000 events/s: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    return run(args.rate, args.seconds, args.rounds)


if __name__ == "__main__":
    sys.exit(main())
