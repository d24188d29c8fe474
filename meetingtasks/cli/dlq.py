"""``dlq list|show|replay|purge``: the dead-letter queue tools.

Each service's letters are read on that service's own Redis (``service_redis_urls``), so a service moved to
its own instance keeps its letters visible, replayable and purgeable.
"""

from __future__ import annotations

import time

import click

from meetingtasks.cli.main import echo_json, fail, platform_command
from meetingtasks.core.errors import ReplayRefused
from meetingtasks.core.secret_fields import mask_text
from meetingtasks.store.deadletter import DeadLetter
from meetingtasks.store.platform import Platform

service_option = click.option(
    "--service", help="Only this service (any service the platform knows; see `meetingtasks stats`)."
)


@click.group()
def dlq() -> None:
    """Inspect, replay and purge dead letters."""


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


@dlq.command("list")
@service_option
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1))
@platform_command
def list_(platform: Platform, service: str | None, as_json: bool, limit: int) -> None:
    """List dead letters, newest first."""
    if service:
        platform.check_service(service)
    letters = platform.dead_letters.list_each(platform.service_clients(service), service, limit=limit)
    if as_json:
        echo_json([letter.summary() for letter in letters])
        return
    if not letters:
        click.echo("no dead letters")
        return
    for letter in letters:
        click.echo(f"{letter.id}  {letter.service:<9} {letter.task_type or '-':<28} {letter.reason:<18} "
                   f"{_when(letter.last_failure_at)}  {letter.error[:80]}")


@dlq.command()
@click.argument("letter_id")
@platform_command
def show(platform: Platform, letter_id: str) -> None:
    """Show one dead letter in full (JSON)."""
    letter: DeadLetter = platform.dead_letters.locate(platform.service_clients(), letter_id)[1]
    data = letter.summary()
    data["traceback"] = None if letter.traceback is None else mask_text(letter.traceback)
    data["message"] = None if letter.message is None else mask_text(letter.message)
    echo_json(data)


@dlq.command()
@click.argument("letter_id", required=False)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter (of --service).")
@service_option
@platform_command
def replay(platform: Platform, letter_id: str | None, replay_all: bool, service: str | None) -> None:
    """Queue a dead letter again with its original priority and a fresh retry budget."""
    if bool(letter_id) == replay_all:
        fail("give a dead-letter ID or --all", code=2)
    if service:
        platform.check_service(service)
    store = platform.dead_letters
    clients = platform.service_clients(service)
    if letter_id:
        held_by, _ = store.locate(clients, letter_id)
        targets = [(held_by, letter_id)]
    else:
        # Each service's letters from its own Redis, replayed there (the service holding a letter, not the
        # letter's own record, says where it goes).
        targets = [(svc, letter.id) for svc, client in clients.items()
                   for letter in store.list(client, svc, limit=10**9) if letter.replayable]
    replayed = refused = 0
    for svc, target_id in targets:
        try:
            result = store.replay(clients[svc], target_id, service=svc)
        except ReplayRefused as exc:
            if letter_id:
                raise
            refused += 1
            click.echo(f"error: {exc}", err=True)
            continue
        if result.replayed:
            replayed += 1
            click.echo(f"replayed {target_id} -> {result.queue}")
        elif letter_id:
            fail(f"dead letter {letter_id!r} was already replayed or purged")
    if replay_all:
        click.echo(f"{replayed} replayed" + (f", {refused} refused" if refused else ""))
        if refused:
            raise SystemExit(1)


@dlq.command()
@service_option
@platform_command
def purge(platform: Platform, service: str | None) -> None:
    """Delete dead letters (all services unless --service)."""
    if service:
        platform.check_service(service)
    removed = platform.dead_letters.purge_each(platform.service_clients(service), service)
    click.echo(f"{removed} dead letters purged")


def register(group: click.Group) -> None:
    group.add_command(dlq)
