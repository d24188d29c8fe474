"""One Flower for all services: ``celery -A meetingtasks.operations.flower flower [--port=5555]``.

The services are those the platform knows (:meth:`~meetingtasks.store.platform.Platform.services`: the registered
ones, ``MEETINGTASKS_INCLUDE`` modules', and those whose workers recorded themselves in Redis). Every service's
workers send their task events and answer control commands on the shared broker, so a
single Celery app that knows the twenty queues sees the workers and tasks of every service. Basic auth
comes from ``MEETINGTASKS_FLOWER_BASIC_AUTH`` (``user:password``, several separated by commas) unless
Flower's own ``--basic-auth`` or ``FLOWER_BASIC_AUTH`` is given. With per-service brokers
(``service_redis_urls``), run one Flower per broker instead: ``celery -A meetingtasks.services.ai flower``.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from meetingtasks.core.errors import ConfigurationError
from meetingtasks.core.priority import service_queues
from meetingtasks.core.registry import import_modules
from meetingtasks.core.settings import Settings, load_settings
from meetingtasks.store.connections import celery_broker
from meetingtasks.store.platform import Platform


def create_flower_app(settings: Settings | None = None) -> Celery:
    """A Celery app for monitoring: the shared broker, all queues, JSON only; it runs no task."""
    settings = settings or load_settings()
    broker = celery_broker(settings.broker_url(), settings)
    app = Celery("meetingtasks.operations.flower", set_as_current=False)
    import_modules(settings.include)
    services = Platform(settings).services()
    queues = [Queue(q, Exchange(q, type="direct"), routing_key=q) for svc in services for q in service_queues(svc)]
    app.conf.update(
        broker_url=broker["broker_url"],
        broker_use_ssl=broker["broker_use_ssl"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s,
                                  **broker["broker_transport_options"]},
        task_queues=queues,
        accept_content=["json"],
        event_serializer="json",
        result_backend=None,
        timezone=settings.timezone,
        enable_utc=True,
    )
    apply_basic_auth(settings)
    return app


def basic_auth_users(settings: Settings) -> list[str]:
    """``["user:password", ...]`` from ``flower_basic_auth``; a value without a colon is a config error."""
    if settings.flower_basic_auth is None:
        return []
    users = [u.strip() for u in settings.flower_basic_auth.get_secret_value().split(",") if u.strip()]
    for user in users:
        if ":" not in user:
            raise ConfigurationError("MEETINGTASKS_FLOWER_BASIC_AUTH: use user:password (several separated by ',')")
    return users


def apply_basic_auth(settings: Settings) -> None:
    """Hand our basic-auth users to Flower's options, unless Flower was given its own. With no authentication
    at all Flower does not start, unless ``MEETINGTASKS_FLOWER_ALLOW_NO_AUTH`` says so explicitly."""
    users = basic_auth_users(settings)
    if not users:
        if not settings.flower_allow_no_auth and not _flower_has_own_auth():
            raise ConfigurationError(
                "Flower would open without authentication: set MEETINGTASKS_FLOWER_BASIC_AUTH=user:password "
                "(or Flower's --basic-auth / --auth), or MEETINGTASKS_FLOWER_ALLOW_NO_AUTH=1 to allow it"
            )
        return
    from flower.options import options

    if not options.basic_auth:
        options.basic_auth = users


def _flower_has_own_auth() -> bool:
    """Whether Flower's own options (command line or FLOWER_* environment) bring authentication."""
    import os
    import sys

    given = " ".join(sys.argv)
    return any(flag in given for flag in ("--basic-auth", "--basic_auth", "--auth")) or any(
        os.environ.get(name) for name in ("FLOWER_BASIC_AUTH", "FLOWER_AUTH")
    )


def __getattr__(name: str) -> Any:
    # Built on first access (``celery -A meetingtasks.operations.flower`` looks up ``app``), not at import.
    if name == "app":
        app = create_flower_app()
        globals()["app"] = app
        return app
    raise AttributeError(name)
