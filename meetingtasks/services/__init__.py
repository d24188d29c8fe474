"""The meeting system's five services. ``meetingtasks.services.<svc>:app`` is each one's Celery app."""

from meetingtasks.registry import SERVICES

__all__ = ["SERVICES"]
