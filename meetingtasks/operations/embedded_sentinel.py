"""An embedded Sentinel group: a primary, its replicas and three sentinels, all the redis-server binary
:mod:`meetingtasks.operations.embedded` finds (it runs as a sentinel with ``--sentinel``). Used by the failover test and
the replica-acks benchmark; ``url`` is the ``sentinel://`` URL of the group."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any, Self

import redis

from meetingtasks.core.errors import ConfigurationError
from meetingtasks.operations.embedded import (
    RedisServer,
    answers_for,
    find_redis_server,
    free_port,
    last_log_line,
)

MASTER_NAME = "mymaster"


class SentinelServer:
    """One sentinel process with its own (rewritable) config file; ``stop()`` is safe twice."""

    def __init__(self, data_dir: Path, primary_port: int, *, down_after_ms: int, failover_timeout_ms: int) -> None:
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.primary_port = primary_port
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> SentinelServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.data_dir}\nlogfile {self.data_dir / 'sentinel.log'}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        self.process = subprocess.Popen([find_redis_server(), str(config), "--sentinel"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    if client.ping() and answers_for(client, self.process):
                        return self
                except redis.RedisError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise ConfigurationError(f"sentinel on port {self.port} did not start: "
                                             f"{last_log_line(self.data_dir / 'sentinel.log')}")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class SentinelGroup:
    """A primary, ``replicas`` replicas of it and three sentinels watching them, on free loopback ports. A
    subclass with other processes (the TLS tests') sets ``nodes`` and ``sentinels`` and overrides
    :meth:`client_of` and :attr:`url`."""

    nodes: list[Any]
    sentinels: list[Any]

    def __init__(self, data_dir: Path, *, replicas: int = 1, down_after_ms: int = 2000,
                 failover_timeout_ms: int = 6000) -> None:
        data_dir = Path(data_dir)
        self.nodes = [RedisServer(data_dir / "node0")]
        for i in range(replicas):
            node = RedisServer(data_dir / f"node{i + 1}")
            node.extra_args = ["--replicaof", "127.0.0.1", str(self.nodes[0].port)]
            self.nodes.append(node)
        self.sentinels = [SentinelServer(data_dir / f"sentinel{i}", self.nodes[0].port, down_after_ms=down_after_ms,
                                         failover_timeout_ms=failover_timeout_ms) for i in range(3)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"sentinel://{hosts}/{MASTER_NAME}/0"

    def client_of(self, part: Any) -> redis.Redis:
        """A client of one of the group's processes (a data node or a sentinel): ``part.port`` on loopback."""
        return redis.Redis(port=part.port, socket_timeout=1)

    def start(self, timeout_s: float = 30.0) -> Self:
        """Start the data nodes, wait for the replicas' sync, start the sentinels and wait until each knows the whole
        group. A group that fails to start stops what it started: no process outlives the error."""
        try:
            for node in self.nodes:
                node.start()
            self.wait_synced(timeout_s)
            for sentinel in self.sentinels:
                sentinel.start()
            deadline = time.monotonic() + timeout_s
            while not all(self._sees_the_group(s) for s in self.sentinels):
                if time.monotonic() > deadline:
                    raise ConfigurationError("the sentinels did not discover the replicas and each other in time")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def _sees_the_group(self, sentinel: Any) -> bool:
        """Whether ``sentinel`` knows every replica and the other sentinels (a failover needs their quorum)."""
        client = self.client_of(sentinel)
        try:
            replicas, others = client.sentinel_slaves(MASTER_NAME), client.sentinel_sentinels(MASTER_NAME)
            return (isinstance(replicas, list) and len(replicas) >= len(self.nodes) - 1
                    and isinstance(others, list) and len(others) >= len(self.sentinels) - 1)
        except redis.RedisError:
            return False
        finally:
            client.close()

    def primary_port(self) -> int | None:
        """The primary's port as the first sentinel that answers says."""
        for sentinel in self.sentinels:
            client = self.client_of(sentinel)
            try:
                addr = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                return int(addr[1]) if isinstance(addr, tuple | list) else None
            except redis.RedisError:
                continue
            finally:
                client.close()
        return None

    def node(self, port: int) -> RedisServer:
        found: RedisServer = next(n for n in self.nodes if n.port == port)
        return found

    def rejoin(self, port: int) -> None:
        """Start the stopped node on ``port`` again as a replica of the current primary (as an orchestrator
        would; the sentinels would turn it into one too, but only at their next look, up to 10 s later)."""
        primary = self.primary_port()
        node = self.node(port)
        node.extra_args = ["--replicaof", "127.0.0.1", str(primary)] if primary not in (None, port) else []
        node.start()

    def wait_synced(self, timeout_s: float = 30.0) -> None:
        """Until every running replica is connected to the primary, done with its initial sync and streaming."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._synced():
                return
            time.sleep(0.05)
        raise ConfigurationError("the replicas did not catch up with the primary in time")

    def _synced(self) -> bool:
        for node in self.nodes:
            if node.process is None:
                continue
            client = self.client_of(node)
            try:
                info = client.info("replication")
            except redis.RedisError:
                return False
            finally:
                client.close()
            if info.get("role") != "master":
                continue
            running = sum(1 for n in self.nodes if n.process is not None) - 1
            replicas = [info[k] for k in info if k.startswith("slave") and isinstance(info[k], dict)]
            # Online and acknowledging (a replica acks its offset every second: under load the last ack always
            # trails the primary's offset a little, so "caught up" is "streaming", not "equal").
            online = [r for r in replicas if r.get("state") == "online" and int(r.get("lag", 99)) <= 1]
            return len(online) >= running
        return False

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for node in self.nodes:
            node.stop()
