"""``worker SERVICE``: a Celery worker of one service, consuming its four queues in strict order.

SERVICE is any service whose task types are registered: the meeting system's, or one of your own whose module
``--include`` (or ``MEETINGTASKS_INCLUDE``) imports; anything else is a one-line error.
"""

from __future__ import annotations

import sys

import click

from meetingtasks.cli.main import fail
from meetingtasks.core.errors import MeetingTasksError


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("service")
@click.option("--include", "-I", "includes", multiple=True, help="Module with the service's own task types.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(service: str, includes: tuple[str, ...], celery_args: tuple[str, ...]) -> None:
    """Run a worker of SERVICE (the meeting system's, or yours with --include); other options go to `celery
    worker` (e.g. --concurrency 4 --pool threads)."""
    from meetingtasks.core.registry import REGISTRY
    from meetingtasks.core.secret_fields import check_worker_keys
    from meetingtasks.worker.app import create_app
    from meetingtasks.worker.launch import run_worker

    try:
        app = create_app(service, include=includes)
        check_worker_keys(app.mt_platform.settings, service,
                          {spec.name: spec.payload_model for spec in REGISTRY.for_service(service)})
    except MeetingTasksError as exc:
        fail(str(exc))
    argv = ["--loglevel", app.mt_platform.settings.log_level, *celery_args]
    if not any(arg in ("-n", "--hostname") or arg.startswith("--hostname=") for arg in celery_args):
        # One node name per service, so Flower and `celery inspect` tell the workers of a host apart.
        argv += ["--hostname", f"{service}@%h"]
    code = run_worker(app, argv, prog_name=f"meetingtasks worker {service}")
    if code:
        # Celery's own status (1 after an unrecoverable error or a cold shutdown; 0 after a warm one, SIGTERM):
        # a supervisor restarting on failure (systemd, compose, `meetingtasks up`) must see a worker that died.
        sys.exit(code)


def register(group: click.Group) -> None:
    group.add_command(worker)
