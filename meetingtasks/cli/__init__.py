"""The ``meetingtasks`` command line. Exit codes: 0 success, 1 failure, 2 usage error.

Each command imports what it runs inside its function (the gateway, the console, Celery, the worker's app): the
imports here stay small so that ``meetingtasks --help`` and a quick command start in a fraction of a second.
"""

from meetingtasks.cli.main import main

__all__ = ["main"]
