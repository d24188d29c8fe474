"""Shared body of the per-service entry points."""

from __future__ import annotations

import sys

from celery import Celery

from meetingtasks.app import create_app


def app_for(service: str) -> Celery:
    return create_app(service)


def run(service: str, argv: list[str] | None = None) -> None:
    app = app_for(service)
    app.worker_main(argv=["worker", *(sys.argv[1:] if argv is None else argv)])
