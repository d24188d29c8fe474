"""``reprioritize`` and ``promote``: move a waiting task (see :mod:`meetingtasks.store.moves`)."""

from __future__ import annotations

import click

from meetingtasks.cli.main import fail, platform_command
from meetingtasks.core.priority import Priority
from meetingtasks.store import moves
from meetingtasks.store.platform import Platform


@click.command()
@click.argument("task_id")
@click.argument("priority", metavar="{" + "|".join(p.value for p in Priority) + "}")
@platform_command
def reprioritize(platform: Platform, task_id: str, priority: str) -> None:
    """Move the waiting task TASK_ID to PRIORITY.

    A queued task moves to the new priority's queue in one step; a scheduled or retry-waiting one keeps its due
    time. Exit 1 when the task started, finished, is held by a worker that fetched it, or is unknown."""
    try:
        new = Priority.parse(priority, Priority.NORMAL)
    except ValueError as exc:
        fail(str(exc))
    click.echo(moves.set_priority(platform, task_id, new).describe())


@click.command()
@click.argument("task_id")
@platform_command
def promote(platform: Platform, task_id: str) -> None:
    """Queue the scheduled (or retry-waiting) task TASK_ID now, at its priority. Exit 1 when it is not scheduled."""
    click.echo(moves.promote(platform, task_id).describe())


def register(group: click.Group) -> None:
    for command in (reprioritize, promote):
        group.add_command(command)
