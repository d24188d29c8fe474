"""``beat``: the delayed-set pump for every service and the periodic schedule (run two for availability)."""

from __future__ import annotations

import click

from meetingtasks.cli.main import fail
from meetingtasks.core.errors import MeetingTasksError


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--include", "-I", "includes", multiple=True,
              help="Module to import first (task types, entries added with beat.schedule.periodic).")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(includes: tuple[str, ...], celery_args: tuple[str, ...]) -> None:
    """Run beat (the same as `celery -A beat beat`); other options go to `celery beat`.

    Every beat process pumps the delayed sets of all services; of several, one (holding a lock in Redis)
    fires the periodic entries and another takes over when it dies.
    """
    from meetingtasks.scheduler import create_beat_app

    try:
        app = create_beat_app(include=includes)
    except MeetingTasksError as exc:
        fail(str(exc))
    app.start(["beat", "--loglevel", app.mt_platform.settings.log_level, *celery_args])


def register(group: click.Group) -> None:
    group.add_command(beat)
