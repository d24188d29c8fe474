"""Gateway at scale: many concurrent WebSocket clients on one gateway process, each getting its pushes.

Starts its own redis-server and one ``meetingtasks gateway`` process (loopback only), then:

1. connects ``--clients`` clients (default 10,000) and reports the gateway's memory per idle connection
   (growth of its resident set size divided by the number of connections);
2. per round: every task is submitted by a client through the gateway (``submit`` -> ``accepted`` ->
   QUEUED push), then a simulated worker pops the messages from the queue and records their STARTED and
   SUCCEEDED transitions at ``--rate`` tasks/s (default 1,000) with the very call a worker makes
   (``StatusStore.transition``: the Lua that records and publishes). Each client measures, per push, the
   time from the transition (its ``time`` field) to the frame's arrival. Target: p99 < 50 ms.

    python -m bench.gateway [--clients 10000] [--rate 1000] [--tasks 10000] [--rounds 3]

Clients and the simulated worker run in separate processes from the gateway (2 cores are shared by all).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import psutil
import websockets

from meetingtasks.core.message import loads
from meetingtasks.core.settings import Settings
from meetingtasks.gateway.tokens import mint_token
from meetingtasks.operations.embedded import RedisServer, free_port
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status

SECRET = "bench-gateway-secret-0123456789abcdef"
TASK_TYPE = "speech_recognition"
QUEUES = ["ai.critical", "ai.high", "ai.normal", "ai.low"]
#: Simulated handler run time between a task's STARTED and SUCCEEDED (seconds).
RUN_S = 0.02
TICK_S = 0.01


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, wanted))
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def spread(values: list[float], unit: str = "", digits: int = 1) -> str:
    return (f"median {statistics.median(values):,.{digits}f}{unit} "
            f"(min {min(values):,.{digits}f} - max {max(values):,.{digits}f})")


# --- the simulated worker (own process) -------------------------------------------------------------------
def drive(redis_url: str, tasks: int, rate: float, done: Any) -> None:
    """Pop ``tasks`` messages and record STARTED, then SUCCEEDED ``RUN_S`` later, at ``rate`` tasks/s."""
    platform = Platform(Settings(redis_url=redis_url))
    client = platform.redis()
    started: list[tuple[float, str]] = []
    finished = 0
    begin = time.monotonic()
    taken = 0
    while finished < tasks:
        now = time.monotonic()
        due = min(tasks, int((now - begin) * rate) + 1) - taken
        with client.pipeline(transaction=False) as pipe:
            if due > 0:
                for queue in QUEUES:
                    pipe.rpop(queue, due)
                popped = [m for batch in pipe.execute() if batch for m in batch][:due]
                for raw in popped:
                    task_id = loads(raw)["headers"]["id"]
                    platform.status.transition(pipe, task_id, Status.STARTED, attempt=1,
                                               fields={"type": TASK_TYPE, "service": "ai", "priority": "normal"})
                    started.append((now + RUN_S, task_id))
                taken += len(popped)
            while started and started[0][0] <= now:
                _, task_id = started.pop(0)
                platform.status.transition(pipe, task_id, Status.SUCCEEDED, attempt=1,
                                           fields={"type": TASK_TYPE, "service": "ai", "priority": "normal",
                                                   "result": {"text": "hello", "confidence": 0.9}})
                finished += 1
            pipe.execute()
        time.sleep(max(0.0, TICK_S - (time.monotonic() - now)))
    done.put(time.monotonic() - begin)


# --- the clients (this process) ------------------------------------------------------------------------------
class LoopLag:
    """Measures how late this process's event loop wakes up (a busy client side would inflate latencies)."""

    def __init__(self, every_s: float = 0.005) -> None:
        self.every_s = every_s
        self.worst_s = 0.0
        self.task = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.every_s
            await asyncio.sleep(self.every_s)
            self.worst_s = max(self.worst_s, loop.time() - due)

    def take(self) -> float:
        worst, self.worst_s = self.worst_s, 0.0
        return worst


class Clients:
    def __init__(self, ws_url: str, count: int) -> None:
        self.ws_url = ws_url
        self.count = count
        self.conns: list[Any] = []
        self.readers: list[asyncio.Task[None]] = []
        self.latency: dict[str, list[float]] = {"QUEUED": [], "STARTED": [], "SUCCEEDED": []}
        self.accepted: dict[Any, asyncio.Future[str]] = {}
        self.succeeded = 0
        self.errors: list[str] = []

    async def connect(self, parallel: int = 200) -> float:
        gate = asyncio.Semaphore(parallel)

        async def one(n: int) -> Any:
            async with gate:
                token = mint_token(SECRET, f"client-{n}", 3600)
                for attempt in range(5):
                    try:
                        return await websockets.connect(f"{self.ws_url}?token={token}", max_queue=None,
                                                        open_timeout=60, ping_interval=None)
                    except OSError:
                        await asyncio.sleep(0.2 * (attempt + 1))
                raise RuntimeError(f"client {n} could not connect")

        begin = time.monotonic()
        self.conns = list(await asyncio.gather(*(one(n) for n in range(self.count))))
        self.readers = [asyncio.create_task(self.read(c)) for c in self.conns]
        return time.monotonic() - begin

    async def read(self, conn: Any) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in conn:
                arrived = time.time()
                frame = orjson.loads(raw)
                op = frame["op"]
                if op == "status":
                    self.latency.setdefault(frame["status"], []).append(arrived - frame["time"])
                    if frame["status"] == "SUCCEEDED":
                        self.succeeded += 1
                elif op == "accepted":
                    future = self.accepted.pop(frame["ref"], None)
                    if future is not None and not future.done():
                        future.set_result(frame["id"])
                elif op == "error":
                    self.errors.append(frame["error"])

    async def submit_all(self, tasks: int, rate: float, round_no: int) -> None:
        loop = asyncio.get_running_loop()
        begin = loop.time()
        futures = []
        for n in range(tasks):
            delay = begin + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            ref = f"{round_no}-{n}"
            future: asyncio.Future[str] = loop.create_future()
            self.accepted[ref] = future
            futures.append(future)
            payload = {"audio_ref": f"s3://bench/{ref}.wav", "meeting_id": f"m-{n % 100}"}
            await self.conns[n % self.count].send(orjson.dumps(
                {"op": "submit", "ref": ref, "type": TASK_TYPE, "payload": payload}).decode())
        await asyncio.wait_for(asyncio.gather(*futures), 120)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.conns), return_exceptions=True)
        for reader in self.readers:
            reader.cancel()


def start_gateway(redis_url: str, data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEETINGTASKS_")}
    env.update(
        MEETINGTASKS_REDIS_URL=redis_url, MEETINGTASKS_GATEWAY_SECRET=SECRET, MEETINGTASKS_LOG_LEVEL="WARNING",
        MEETINGTASKS_DATA_DIR=str(data_dir), MEETINGTASKS_GATEWAY_IDLE_TIMEOUT_S="3600",
        MEETINGTASKS_GATEWAY_CLIENT_RATE_PER_S="100", MEETINGTASKS_GATEWAY_MAX_INFLIGHT="1000",
    )
    env.update({k: v for k, v in os.environ.items() if k == "MEETINGTASKS_GATEWAY_WS_IMPL"})
    proc = subprocess.Popen([sys.executable, "-m", "meetingtasks.cli", "gateway", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=(data_dir / "gateway.log").open("wb"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                                                  timeout=2) as response:
            if response.status == 200:
                return proc
        if proc.poll() is not None:
            raise RuntimeError((data_dir / "gateway.log").read_text())
        time.sleep(0.1)
    raise RuntimeError("gateway did not become healthy within 60 s")


async def run(args: argparse.Namespace, redis_url: str, data_dir: Path) -> int:
    port = free_port()
    gateway = start_gateway(redis_url, data_dir, port)
    gateway_ps = psutil.Process(gateway.pid)
    try:
        await asyncio.sleep(1)
        rss_before = gateway_ps.memory_info().rss
        clients = Clients(f"ws://127.0.0.1:{port}/ws", args.clients)
        connect_s = await clients.connect()
        # The clients are this process's business: keep the cyclic GC from pausing their reads, so that the
        # figures are the gateway's (gen-2 passes over 10,000 connections take long).
        gc.collect()
        gc.freeze()
        gc.disable()
        lag = LoopLag()
        await asyncio.sleep(3)  # let the gateway settle
        rss_idle = gateway_ps.memory_info().rss
        per_conn_kib = (rss_idle - rss_before) / args.clients / 1024
        print(f"{args.clients:,} clients connected in {connect_s:.1f}s; gateway RSS {rss_before / 2**20:.0f} MiB "
              f"-> {rss_idle / 2**20:.0f} MiB: {per_conn_kib:.1f} KiB per idle connection")

        ctx = multiprocessing.get_context("spawn")
        p99s: list[float] = []
        p50s: list[float] = []
        queued_p99s: list[float] = []
        for round_no in range(1, args.rounds + 1):
            for values in clients.latency.values():
                values.clear()
            clients.succeeded = 0
            await clients.submit_all(args.tasks, args.submit_rate, round_no)
            lag.take()
            queued = list(clients.latency["QUEUED"])
            done = ctx.Queue()
            cpu_before = gateway_ps.cpu_times()
            worker = ctx.Process(target=drive, args=(redis_url, args.tasks, args.rate, done))
            worker.start()
            drive_s = await asyncio.to_thread(done.get, True, 300)
            worker.join(30)
            deadline = time.monotonic() + 30
            while clients.succeeded < args.tasks and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            cpu_after = gateway_ps.cpu_times()
            pushes = clients.latency["STARTED"] + clients.latency["SUCCEEDED"]
            p50, p99 = percentile(pushes, 50) * 1000, percentile(pushes, 99) * 1000
            p50s.append(p50)
            p99s.append(p99)
            queued_p99s.append(percentile(queued, 99) * 1000)
            cpu = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / drive_s * 100
            print(f"round {round_no}: {args.tasks:,} tasks at {args.tasks / drive_s:,.0f} tasks/s; "
                  f"{len(pushes):,} pushes, p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(pushes) * 1000:.1f} ms; "
                  f"QUEUED push p99 {queued_p99s[-1]:.1f} ms; SUCCEEDED received {clients.succeeded:,}/"
                  f"{args.tasks:,}; gateway CPU {cpu:.0f}%; worst client loop lag {lag.take() * 1000:.0f} ms")
            if clients.errors:
                print(f"  {len(clients.errors)} error frames, first: {clients.errors[0]}")
        await clients.close()
    finally:
        gateway.send_signal(signal.SIGTERM)
        try:
            gateway.wait(20)
        except subprocess.TimeoutExpired:
            gateway.kill()
    print(f"push latency (transition -> client), {args.rounds} rounds: p50 {spread(p50s, ' ms')}, "
          f"p99 {spread(p99s, ' ms')}")
    print(f"memory per idle connection: {per_conn_kib:.1f} KiB")
    ok = statistics.median(p99s) < 50 and not clients.errors
    print(f"target push p99 < 50 ms with {args.clients:,} clients at {args.rate:,.0f} tasks/s: "
          f"{'met' if ok else 'NOT met'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1_000, help="Tasks/s of the simulated worker.")
    parser.add_argument("--submit-rate", type=float, default=1_000, help="Submits/s through the gateway.")
    parser.add_argument("--tasks", type=int, default=10_000, help="Tasks per round.")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    raise_fd_limit(args.clients + 1_000)
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            with contextlib.suppress(ImportError):
                import uvloop  # what the gateway runs on too (uvicorn[standard])

                uvloop.install()
            return asyncio.run(run(args, server.url, Path(tmp)))
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
