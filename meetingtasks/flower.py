"""Flower's start command of earlier releases, ``celery -A meetingtasks.flower flower``, which deployments keep in
their unit files and manifests: the same app as ``celery -A meetingtasks.operations.flower flower`` (where Flower
lives since the package is grouped by layer), built on first access."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Celery's ``-A`` looks up ``app``; importing this module builds nothing.
    if name == "app":
        from meetingtasks.operations import flower

        return flower.app
    raise AttributeError(name)
