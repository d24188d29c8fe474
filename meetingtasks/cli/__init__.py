"""The ``meetingtasks`` command line. Exit codes: 0 success, 1 failure, 2 usage error."""

from meetingtasks.cli.main import main

__all__ = ["main"]
