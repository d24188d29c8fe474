"""The user service: its Celery app (built on first access), task types and subscriptions."""

from __future__ import annotations

from typing import Any

from meetingtasks.services.user import tasks as tasks  # registers the service's task types


def __getattr__(name: str) -> Any:
    # Built lazily so that importing the routing table never opens a broker connection.
    if name == "app":
        from meetingtasks.worker.app import create_app

        app = create_app("user")
        globals()["app"] = app
        return app
    raise AttributeError(name)
