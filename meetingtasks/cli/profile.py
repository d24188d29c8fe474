"""``profile TYPE [--runs N]``: profile the next N runs of a task type on any worker and print the profiles
(:mod:`meetingtasks.worker.profiling`); ``--show`` prints the kept ones without asking for more."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import click

from meetingtasks.cli.main import echo_json, fail, platform_command
from meetingtasks.store.platform import Platform

if TYPE_CHECKING:
    from meetingtasks.worker.profiling import Profile


@click.command()
@click.argument("task_type")
@click.option("--runs", default=1, show_default=True, type=click.IntRange(min=1, max=1000),
              help="How many of the next runs to profile.")
@click.option("--show", is_flag=True, help="Print the kept profiles of TYPE (newest last); request nothing.")
@click.option("--no-wait", is_flag=True, help="Request the runs and return; print them later with --show.")
@click.option("--timeout", "timeout_s", default=300.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds to wait for the profiled runs.")
@click.option("--include", "-I", "includes", multiple=True, help="Module with task types of its own; repeatable.")
@click.option("--json", "as_json", is_flag=True, help="The profiles as JSON (with pyinstrument's session).")
@platform_command
def profile(platform: Platform, task_type: str, runs: int, show: bool, no_wait: bool, timeout_s: float,
            includes: tuple[str, ...], as_json: bool) -> None:
    """Profile the next --runs runs of TASK_TYPE on any worker with a sampling profiler (pyinstrument, the
    extra meetingtasks[profile] where the workers run) and print each profile as text when it comes."""
    from meetingtasks.core.registry import REGISTRY, import_modules
    from meetingtasks.worker.profiling import Profiles

    import_modules([*platform.settings.include, *includes])
    REGISTRY.get(task_type)  # an unknown type: one line naming the known ones
    profiles = Profiles(platform)
    if show:
        _print(list(reversed(profiles.kept(task_type))), as_json)
        return
    known = [p.id for p in profiles.kept(task_type)]
    requested = profiles.request(task_type, runs)
    if no_wait:
        click.echo(f"profiling the next {requested} runs of {task_type}; "
                   f"`meetingtasks profile {task_type} --show` prints them")
        return
    # Only the newest profile_keep are kept: waiting for more than that could never end.
    expected = min(runs, platform.settings.profile_keep)
    click.echo(f"waiting up to {timeout_s:.0f}s for {expected} profiled runs of {task_type}...", err=True)
    came: list[Profile] = []
    deadline = time.monotonic() + timeout_s
    while len(came) < expected:
        fresh = profiles.wait(task_type, 1, known=[*known, *(p.id for p in came)],
                              timeout_s=max(0.0, deadline - time.monotonic()))
        if not fresh:
            break
        came += fresh
        if not as_json:
            _print(fresh, as_json)  # each as it comes
    if as_json:
        _print(came, as_json)
    if len(came) < expected:
        fail(f"only {len(came)} of {expected} runs of {task_type} were profiled within {timeout_s:.0f}s (is a "
             f"worker running it, with pyinstrument installed?); the request stays: `meetingtasks profile "
             f"{task_type} --show` prints them later")


def _print(items: list[Profile], as_json: bool) -> None:
    if as_json:
        echo_json([p.__dict__ for p in items])
        return
    if not items:
        click.echo("no profiles kept")
    for item in items:
        click.echo(item.header())
        click.echo(item.text)


def register(group: click.Group) -> None:
    group.add_command(profile)
