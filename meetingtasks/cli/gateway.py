"""``gateway``: the WebSocket gateway alone (as deployments run it)."""

from __future__ import annotations

import logging
import os
import re
import secrets

import click

from meetingtasks.cli.main import fail
from meetingtasks.core.errors import MeetingTasksError
from meetingtasks.core.settings import GATEWAY_SECRET_FILE, Settings, load_settings

log = logging.getLogger(__name__)

#: Frames this many times over ``gateway_max_frame_bytes`` are cut off by the server (close 1009); smaller
#: oversized frames get an error frame and the connection stays open.
HARD_FRAME_FACTOR = 16


class RedactTokens(logging.Filter):
    """uvicorn logs each WebSocket path with its query string, which carries the client's token."""

    pattern = re.compile(r"(token=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.pattern.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = self.pattern.sub(r"\1***", record.msg)
        return True


def make_secret(settings: Settings) -> str:
    """Create a secret in the data directory (readable by the owner only) unless one is set already."""
    existing = settings.gateway_signing_secret()
    if existing is not None:
        return existing
    path = settings.data_dir / GATEWAY_SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(secret + "\n")
    click.echo(f"generated a gateway secret in {path}", err=True)
    return secret


@click.command()
@click.option("--host", help="Interface to listen on [default: gateway_host, 127.0.0.1].")
@click.option("--port", type=click.IntRange(0, 65535), help="Port [default: gateway_port, 8765].")
@click.option("--include", "-I", "includes", multiple=True, help="Module with the service's own task types.")
@click.option("--generate-secret", is_flag=True,
              help=f"Create a secret in the data directory ({GATEWAY_SECRET_FILE}) when none is set.")
def gateway(host: str | None, port: int | None, includes: tuple[str, ...], generate_secret: bool) -> None:
    """Run the WebSocket gateway: clients submit tasks and watch their status live on /ws."""
    import uvicorn

    from meetingtasks.core.logs import configure_logging
    from meetingtasks.core.registry import import_modules, load_builtin_types
    from meetingtasks.gateway import create_gateway_app, require_secret
    from meetingtasks.store.platform import configure

    try:
        settings = load_settings()
        load_builtin_types()
        import_modules([*settings.include, *includes])
        if generate_secret:
            make_secret(settings)
        secret = require_secret(settings)
        configure_logging(settings, component="gateway")
        logging.getLogger("uvicorn.error").addFilter(RedactTokens())
        platform = configure(settings)
        app = create_gateway_app(platform, secret)
    except MeetingTasksError as exc:
        fail(str(exc))
    bind_host = host or settings.gateway_host
    bind_port = settings.gateway_port if port is None else port
    click.echo(f"gateway: page http://{bind_host}:{bind_port}/  clients ws://{bind_host}:{bind_port}/ws", err=True)
    uvicorn.run(
        app, host=bind_host, port=bind_port, log_config=None,  # our handler on the root logger
        access_log=False,  # query strings carry tokens
        ws_max_size=settings.gateway_max_frame_bytes * HARD_FRAME_FACTOR, backlog=4096,
        timeout_graceful_shutdown=5, ws=settings.gateway_ws_impl,
        ws_per_message_deflate=False,  # small JSON frames; deflate costs ~50 KiB of zlib state per connection
    )


def register(group: click.Group) -> None:
    group.add_command(gateway)
