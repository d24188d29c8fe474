"""``bridge [--include MODULE]...``: turn the events on every declared channel into tasks until stopped."""

from __future__ import annotations

import signal
import threading

import click

from meetingtasks.cli.main import fail
from meetingtasks.core.errors import MeetingTasksError


@click.command()
@click.option("--include", "-I", "includes", multiple=True,
              help="Module with subscriptions (and task types) of its own; repeatable.")
@click.option("--consumer", default=None, help="Consumer name in the group (default host:pid:random).")
def bridge(includes: tuple[str, ...], consumer: str | None) -> None:
    """Run the event bridge: the services' subscriptions, plus those of --include modules and
    MEETINGTASKS_INCLUDE. Several bridges share the work. Stops cleanly on SIGTERM or Ctrl-C."""
    from meetingtasks.core.logs import configure_logging
    from meetingtasks.events.bridge import Bridge
    from meetingtasks.store.platform import configure

    try:
        platform = configure()
        configure_logging(platform.settings, component="bridge")
        runner = Bridge(platform, includes=includes, consumer=consumer)
    except MeetingTasksError as exc:
        fail(str(exc))
        return
    stopping = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    # Imported before the bridge's threads start: importing Celery/kombu here while they run raced with their
    # own imports (ImportError: partially initialized module 'kombu.utils.functional').
    from meetingtasks.metrics.reporter import bridge_reporter

    runner.start()
    reporter = bridge_reporter(platform, runner).start()  # counters for `meetingtasks exporter`
    while not stopping.wait(1.0):
        pass
    reporter.stop()
    runner.stop()
    click.echo(f"bridge stopped: {runner.stats}", err=True)


def register(group: click.Group) -> None:
    group.add_command(bridge)
