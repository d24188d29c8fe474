"""``token CLIENT_ID``: a gateway token for a client, signed with the gateway secret."""

from __future__ import annotations

import click

from meetingtasks.cli.main import fail
from meetingtasks.core.errors import MeetingTasksError
from meetingtasks.core.settings import load_settings


@click.command()
@click.argument("client_id")
@click.option("--ttl", "ttl_s", type=click.IntRange(min=1), help="Lifetime in seconds [default: gateway_token_ttl_s].")
def token(client_id: str, ttl_s: int | None) -> None:
    """Print a gateway token for CLIENT_ID (it sees and cancels only its own tasks)."""
    from meetingtasks.gateway.tokens import mint_token, require_secret

    try:
        settings = load_settings()
        secret = require_secret(settings)
        click.echo(mint_token(secret, client_id, ttl_s or settings.gateway_token_ttl_s))
    except (MeetingTasksError, ValueError) as exc:
        fail(str(exc), code=2 if isinstance(exc, ValueError) else 1)


def register(group: click.Group) -> None:
    group.add_command(token)
