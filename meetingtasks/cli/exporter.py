"""``exporter [--host H] [--port P]``: the Prometheus metrics endpoint of the platform."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from meetingtasks.cli.main import platform_command
from meetingtasks.store.platform import Platform


@click.command()
@click.option("--host", default=None, help="Address to bind (default: MEETINGTASKS_EXPORTER_HOST, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port to serve /metrics on (default: MEETINGTASKS_EXPORTER_PORT, 9808; 0 picks a free one).")
@platform_command
def exporter(platform: Platform, host: str | None, port: int | None) -> None:
    """Serve Prometheus metrics: task counters, run/wait times, queues, dead letters, workers."""
    from meetingtasks.core.logs import configure_logging
    from meetingtasks.metrics import Exporter

    configure_logging(platform.settings, component="exporter")
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = Exporter(platform, host=host, port=port).start()
    click.echo(f"exporter ready on {server.url}", err=True)
    try:
        while not stopping.wait(1.0):
            pass
    finally:
        server.stop()


def register(group: click.Group) -> None:
    group.add_command(exporter)
