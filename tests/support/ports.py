"""Ports for parts a test starts later, away from the ports outgoing connections take."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def unclaimed_port(host: str = "127.0.0.1") -> int:
    """A free port below the kernel's ephemeral range. A port from ``bind(0)`` is in that range, where an outgoing
    connection made before the part binds it (`up --ha`'s Redis servers and Sentinels connect to each other) can take
    it, and the part then fails to start ("port ... is taken")."""
    try:
        low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randint(10_000, max(10_001, low - 1))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between 10000 and {low} on {host}")
