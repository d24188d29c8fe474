"""Shared body of the per-service entry points."""

from __future__ import annotations

import sys

from celery import Celery

from meetingtasks.worker.app import create_app
from meetingtasks.worker.launch import run_worker


def app_for(service: str) -> Celery:
    return create_app(service)


def run(service: str, argv: list[str] | None = None) -> None:
    app = app_for(service)
    run_worker(app, sys.argv[1:] if argv is None else argv, prog_name=f"python -m workers.{service}")
