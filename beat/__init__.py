"""The platform's Celery beat. ``celery -A beat beat`` and ``meetingtasks beat`` run the same app.

The app (``beat:app``) is built on first access from the settings (``MEETINGTASKS_*``), so importing the
schedule never opens a connection. What it runs is in :mod:`beat.schedule`.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from meetingtasks.scheduler import create_beat_app

        app = create_beat_app()
        globals()["app"] = app
        return app
    raise AttributeError(name)
