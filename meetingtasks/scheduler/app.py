"""The Celery app of beat: redbeat on the platform's Redis, the schedule from ``beat/schedule.py``."""

from __future__ import annotations

from collections.abc import Iterable

from celery import Celery

import meetingtasks.worker.maintenance  # noqa: F401 - registers the maintenance task types the schedule names
from meetingtasks.core.logs import install_celery_logging
from meetingtasks.core.registry import import_modules
from meetingtasks.core.sentinel import is_sentinel
from meetingtasks.core.settings import Settings, load_settings
from meetingtasks.store.connections import celery_broker, is_tls, is_unix_socket, new_client, ssl_options
from meetingtasks.store.platform import Platform


def create_beat_app(settings: Settings | None = None, *, include: Iterable[str] = ()) -> Celery:
    """The app ``celery -A beat beat`` runs. ``include`` modules may add entries with ``beat.schedule.periodic``."""
    # The deployment's schedule lives outside the package (beat/schedule.py) and imports it: read when beat starts.
    from beat.schedule import beat_schedule

    settings = settings or load_settings()
    platform = Platform(settings)
    import_modules([*settings.include, *include])
    url = settings.broker_url(None)
    tls = ssl_options(settings) if is_tls(url) else None
    app = Celery("meetingtasks.beat", set_as_current=False)
    app.mt_platform = platform
    install_celery_logging(settings, component="beat")  # JSON lines with MEETINGTASKS_LOG_JSON
    broker = celery_broker(url, settings)
    if is_sentinel(url) or is_unix_socket(url):
        # redbeat's own Sentinel support wants its options in another shape (our client already follows failovers),
        # and it reads a socket URL in kombu's spelling (redis+socket://) as no URL at all: our client instead.
        app.redbeat_redis = new_client(url, settings, decode_responses=True)
    app.conf.update(
        **broker,
        result_backend=None,
        result_expires=None,  # else Celery adds a backend-cleanup entry for a backend we do not have
        task_ignore_result=True,
        timezone=settings.timezone,
        enable_utc=True,
        beat_scheduler="meetingtasks.scheduler.periodic:PlatformScheduler",
        beat_schedule=beat_schedule(settings),
        beat_max_loop_interval=settings.beat_max_interval_s,
        redbeat_redis_url=broker["broker_url"],  # a Sentinel URL in the spelling kombu can print
        redbeat_redis_use_ssl=tls,
        # No retry_period: redbeat's calls fail fast and the scheduler's tick waits out an outage instead.
        redbeat_redis_options={"socket_timeout": settings.redis_socket_timeout_s,
                               "socket_connect_timeout": settings.redis_socket_timeout_s},
        redbeat_key_prefix=platform.keys.beat_prefix,
        redbeat_lock_timeout=settings.beat_lock_timeout_s,
    )
    return app
