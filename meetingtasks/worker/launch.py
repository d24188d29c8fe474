"""Start a service's Celery worker without Celery's umbrella command.

``app.worker_main()`` goes through ``celery.bin.celery``, which imports every ``celery`` sub-command (the amqp
shell with click-repl and prompt-toolkit, multi, events, ...) and loads every ``celery.commands`` plugin
(Flower with tornado): ~150 ms of a ~0.7 s start-up for a worker that uses none of them. :func:`run_worker`
calls the same ``celery worker`` command directly, with the context the umbrella would have given it, so the
worker's options, their parsing and their errors are Celery's own.

What the umbrella adds and a meetingtasks worker does not take: its global options (``-A``, ``-b``,
``--workdir``, ...), which can only be given before ``worker`` and our CLI puts ``worker`` first, and the same
options read from bare environment variables (``APP``, ``BROKER_URL``, ...), which would have let an unrelated
variable replace the service's app or broker. ``NO_COLOR`` is still honoured.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from celery import Celery

from meetingtasks.core.optional_imports import skipped
from meetingtasks.worker.gc_tuning import pause_until_frozen, resume

_TRUE = {"1", "true", "t", "yes", "y", "on"}


def run_worker(app: Celery, args: Sequence[str], prog_name: str = "celery worker") -> int | None:
    """Run ``celery worker ARGS`` for ``app`` in this process; returns the worker's exit code, as
    ``app.start()`` does (a usage error raises :class:`click.UsageError`)."""
    pause_until_frozen()  # collections resume at the worker's first freeze (see meetingtasks.worker.gc_tuning)
    try:
        return _run(app, args, prog_name)
    finally:
        resume()  # a worker that stopped before its first freeze (a usage error) leaves the collector as it was


def _run(app: Celery, args: Sequence[str], prog_name: str) -> int | None:
    # The lexer colours `celery inspect` output; a worker never prints any (see meetingtasks.core.optional_imports).
    with skipped("pygments"):
        from celery.bin.base import CLIContext
        from celery.bin.worker import worker

    # What the umbrella's callback does before it invokes a sub-command: the app's own worker and preload
    # options become options of `worker` (the command object is Celery's, shared by the process).
    for option in [*app.user_options.get("worker", ()), *app.user_options.get("preload", ())]:
        if option not in worker.params:
            worker.params.append(option)
    obj = CLIContext(app=app, no_color=os.environ.get("NO_COLOR", "").strip().lower() in _TRUE,
                     workdir=None, quiet=False)
    code = worker.main(args=list(args), prog_name=prog_name, obj=obj, standalone_mode=False)
    return code if isinstance(code, int) else None
