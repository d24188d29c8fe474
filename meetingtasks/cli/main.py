"""Entry point and shared plumbing of the CLI: settings, one-line errors, JSON output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
import redis

from meetingtasks.core.errors import MeetingTasksError
from meetingtasks.store.platform import Platform, configure

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def platform_command(func: F) -> F:
    """Give the command a configured :class:`Platform` and turn known errors into one line + exit 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            platform = configure()
            return func(platform, *args, **kwargs)
        except MeetingTasksError as exc:
            fail(str(exc))
        except redis.ConnectionError as exc:
            fail(f"cannot reach Redis: {exc} (set MEETINGTASKS_REDIS_URL or run `meetingtasks up`)")
        except redis.RedisError as exc:
            fail(f"Redis error: {exc}")
        return None

    return wrapper  # type: ignore[return-value]


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="meetingtasks")
def cli() -> None:
    """meetingtasks: the task and event platform of the meeting system."""


def _register_commands() -> None:
    """Every module of this package with a ``register(group)`` function adds its commands."""
    import importlib
    import pkgutil

    import meetingtasks.cli as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name in ("main", "__main__"):
            continue
        module = importlib.import_module(f"meetingtasks.cli.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(cli)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="meetingtasks", standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["Platform", "cli", "echo_json", "fail", "main", "platform_command"]
