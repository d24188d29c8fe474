"""``events subscriptions`` and ``events replay CHANNEL --since T``: the bridge's subscriptions, and running
them again over a window of a channel's stream (:mod:`meetingtasks.events.replay`)."""

from __future__ import annotations

import click

from meetingtasks.cli.main import echo_json, fail, platform_command
from meetingtasks.store.platform import Platform

include_option = click.option("--include", "-I", "includes", multiple=True,
                              help="Module with subscriptions of its own (as given to the bridge); repeatable.")


@click.group()
def events() -> None:
    """The event channels' subscriptions, and replaying a window of events through them."""


@events.command()
@include_option
@click.option("--json", "as_json", is_flag=True)
@platform_command
def subscriptions(platform: Platform, includes: tuple[str, ...], as_json: bool) -> None:
    """List the bridge's subscriptions with their names (the names `events replay --subscription` takes)."""
    from meetingtasks.events.replay import list_subscriptions

    subs = list_subscriptions(includes, platform)
    if as_json:
        echo_json([{"name": s.name, "channel": s.channel, "event_type": s.event_type, "task_type": s.task_type,
                    "priority": s.priority.value if s.priority else None, "service": s.service} for s in subs])
        return
    width = max((len(s.name) for s in subs), default=4)
    types = max((len(s.event_type) for s in subs), default=10)
    click.echo(f"{'NAME':<{width}}  {'CHANNEL':<16} {'EVENT TYPE':<{types}}  TASK TYPE")
    for s in subs:
        click.echo(f"{s.name:<{width}}  {s.channel:<16} {s.event_type:<{types}}  {s.task_type}")


@events.command()
@click.argument("channel")
@click.option("--since", required=True, help="Start of the window: epoch seconds, ISO 8601 or a stream id.")
@click.option("--until", default=None, help="End of the window, included (default: the newest event).")
@click.option("--subscription", default=None, help="Only this subscription (see `events subscriptions`).")
@click.option("--dry-run", is_flag=True, help="Count the events and tasks per subscription; queue nothing.")
@click.option("--again", is_flag=True, help="Run a replay done before once more (a new generation).")
@include_option
@click.option("--json", "as_json", is_flag=True)
@platform_command
def replay(platform: Platform, channel: str, since: str, until: str | None, subscription: str | None,
           dry_run: bool, again: bool, includes: tuple[str, ...], as_json: bool) -> None:
    """Run the bridge's subscriptions again over CHANNEL's events of a window still in the stream.

    Each replay queues its tasks under ids of its own generation, once: the same replay asked again queues
    nothing unless --again. Exits 1 when a subscription raised (run the same replay again to retry those).
    """
    from meetingtasks.events.replay import EventReplay

    report = EventReplay(platform, includes=includes).run(
        channel, since=since, until=until, subscription=subscription, dry_run=dry_run, again=again)
    if as_json:
        echo_json(report.to_json())
    else:
        verb = "would queue" if dry_run else "queued"
        generation = f"generation {report.generation}" if report.generation else "a new generation"
        click.echo(f"{'dry run: ' if dry_run else ''}replay of {channel} {report.since} .. {report.until} "
                   f"({generation}): {report.events} events in the stream, {verb} {report.tasks} tasks")
        if report.repeated:
            click.echo("this replay was done before: nothing queued (add --again to run it once more)")
        width = max((len(s.name) for s in report.subscriptions), default=12)
        click.echo(f"  {'SUBSCRIPTION':<{width}}  {'TASK TYPE':<28} {'EVENTS':>7} {'TASKS':>7} {'FAILED':>7}")
        for s in report.subscriptions:
            click.echo(f"  {s.name:<{width}}  {s.task_type:<28} {s.events:>7} {s.tasks:>7} {s.failed:>7}")
    if report.failed:
        fail(f"{report.failed} subscription runs raised; run the same replay again to retry them")


def register(group: click.Group) -> None:
    group.add_command(events)
