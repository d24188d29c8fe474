"""The operator console: dead letters, the delayed set, tasks, events, workers and charts, in a browser.

``meetingtasks console`` serves it (see docs/console.md). Pages are rendered on the server (Jinja2) and updated
live by server-sent events; the charts use uPlot, served from this package (``static/``), so it works offline.
"""

from __future__ import annotations

from meetingtasks.console.app import create_console_app
from meetingtasks.console.auth import console_credentials

__all__ = ["console_credentials", "create_console_app"]
