"""Gateway fixtures: a `meetingtasks gateway` subprocess on a free port, tokens, and a small sync client."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from meetingtasks.gateway.tokens import mint_token
from meetingtasks.operations.embedded import free_port
from tests.support.dispatcher_tasks import WORKER_ENV
from tests.support.processes import PartProcess

SECRET = "test-gateway-secret-0123456789abcdef"


class GatewayProcess(PartProcess):
    """A `meetingtasks gateway` subprocess; ``url`` is its http base, ``ws_url`` its /ws."""

    name = "gateway"

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        super().__init__(self.cli("gateway", "--port", str(self.port)), env, log_path)

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def wait_ready(self, timeout_s: float = 30.0) -> GatewayProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                if self.get("/healthz")[0] == 200:
                    return self
            time.sleep(0.05)
        raise AssertionError(f"gateway not healthy after {timeout_s}s:\n{self.log()}")

    def stats(self) -> dict[str, int]:
        return self.get("/stats")[1]  # type: ignore[no-any-return]


@pytest.fixture
def gateway_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, **WORKER_ENV, "MEETINGTASKS_GATEWAY_SECRET": SECRET}


@pytest.fixture
def start_gateway(gateway_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Factory: ``start_gateway(MEETINGTASKS_GATEWAY_CLIENT_RATE_PER_S="2")`` -> a healthy gateway."""
    started: list[GatewayProcess] = []

    def start(**overrides: str) -> GatewayProcess:
        process = GatewayProcess({**gateway_env, **overrides}, tmp_path / f"gateway-{len(started)}.log")
        started.append(process)
        return process.wait_ready()

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def gateway(start_gateway: Callable[..., GatewayProcess]) -> GatewayProcess:
    return start_gateway()


def token_for(client_id: str, ttl_s: float = 300, secret: str = SECRET, now_s: float | None = None) -> str:
    return mint_token(secret, client_id, ttl_s, now_s=now_s)


class Client:
    """A WebSocket client of the gateway that keeps every frame it received."""

    def __init__(self, gateway: GatewayProcess, client_id: str, **kwargs: Any) -> None:
        self.conn: ClientConnection = connect(f"{gateway.ws_url}?token={token_for(client_id)}", **kwargs)
        self.frames: list[dict[str, Any]] = []

    def send(self, frame: dict[str, Any] | str | bytes) -> None:
        self.conn.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    def recv(self, timeout_s: float = 20.0) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(self.conn.recv(timeout=timeout_s))
        self.frames.append(frame)
        return frame

    def recv_until(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            frame = self.recv(max(0.01, deadline - time.monotonic()))
            if predicate(frame):
                return frame

    def submit(self, task_type: str, payload: dict[str, Any], ref: Any = 1, **extra: Any) -> str:
        self.send({"op": "submit", "ref": ref, "type": task_type, "payload": payload, **extra})
        accepted = self.recv_until(lambda f: f.get("ref") == ref)
        assert accepted["op"] == "accepted", accepted
        return str(accepted["id"])

    def statuses(self, task_id: str) -> list[str]:
        return [f["status"] for f in self.frames if f["op"] == "status" and f["id"] == task_id]

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def clients(gateway: GatewayProcess) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(client_id: str, on: GatewayProcess | None = None) -> Client:
        client = Client(on or gateway, client_id)
        made.append(client)
        return client

    yield make
    for client in made:
        with contextlib.suppress(Exception):
            client.close()
