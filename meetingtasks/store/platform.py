"""The platform's shared parts for one process: settings, key schema, stores and Redis clients.

Everything that talks to Redis takes a :class:`Platform` instead of reaching for globals, so tests can
build one per Redis server. :func:`configure` sets the process default used by the module-level API
(``dispatch``, ``publish_event``); without it the default is built from the environment on first use.
"""

from __future__ import annotations

import threading
from typing import TypeVar

import redis

from meetingtasks.core.app_settings import AppSettings
from meetingtasks.core.errors import ConfigurationError
from meetingtasks.core.registry import import_modules, known_services, services
from meetingtasks.core.settings import Settings, load_settings
from meetingtasks.store.connections import shared_client
from meetingtasks.store.deadletter import DeadLetterStore
from meetingtasks.store.delayed import DelayedSet
from meetingtasks.store.keys import Keys
from meetingtasks.store.replication import ReplicaAcks
from meetingtasks.store.reply_wait import ReplyWait
from meetingtasks.store.status import StatusStore

S = TypeVar("S", bound=AppSettings)


class Platform:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.status = StatusStore(self.keys, settings.status_ttl_s)
        self.dead_letters = DeadLetterStore(self.keys, settings.status_ttl_s)
        self.delayed = DelayedSet(self.keys, settings.status_ttl_s)
        #: How single dispatches wait for their reply (it learns whether Redis answers fast enough to poll).
        self.reply_wait = ReplyWait(settings.dispatch_spin_us)
        self._sections: dict[type[AppSettings], AppSettings] = {}
        #: WAIT after writes that accept work; ``None`` with min_replica_acks 0, so that the hot paths pay one
        #: ``if acks:`` on ``None`` (tens of nanoseconds) and nothing else.
        self.replica_acks: ReplicaAcks | None = (
            ReplicaAcks.from_settings(settings) if settings.min_replica_acks else None)

    def section(self, cls: type[S]) -> S:
        """An application's settings section (:mod:`meetingtasks.core.app_settings`), built on first use."""
        found = self._sections.get(cls)
        if found is None:
            found = self._sections.setdefault(cls, cls.load())
        assert isinstance(found, cls)
        return found

    def use_section(self, section: AppSettings) -> None:
        """Make ``section`` this platform's settings of its application (tests, embedders)."""
        self._sections[type(section)] = section

    def __json__(self) -> str:
        # The platform rides in the broker transport options, which `celery inspect stats` (and so Flower)
        # sends as JSON; kombu's encoder calls this instead of failing on the object.
        return f"meetingtasks platform (key prefix {self.settings.key_prefix!r})"

    def services(self) -> tuple[str, ...]:
        """Every service this process should show: the registered ones (built-in applications, imported
        modules such as ``MEETINGTASKS_INCLUDE``), then those whose workers recorded themselves in Redis
        (``Keys.services``) though this process does not import their code. Redis unreachable: the registered
        ones (the caller's own Redis calls report the outage)."""
        recorded: list[object] = []
        for url in dict.fromkeys([self.settings.broker_url(), *self.settings.service_redis_urls.values()]):
            try:
                recorded += shared_client(url, self.settings).smembers(self.keys.services)
            except redis.RedisError:
                continue
        return known_services(recorded)

    def check_service(self, service: str) -> str:
        """``service`` if :meth:`services` knows it, else a one-line :class:`ConfigurationError`."""
        known = self.services()
        if service not in known:
            raise ConfigurationError(f"unknown service {service!r}; services: {', '.join(known)}")
        return service

    def service_clients(self, service: str | None = None) -> dict[str, redis.Redis]:
        """Service -> the client of its own Redis (just ``service`` when given), for tools that visit each."""
        return {svc: self.redis(svc) for svc in ([service] if service else self.services())}

    def redis(self, service: str | None = None) -> redis.Redis:
        """The shared client of ``service``'s Redis (the global one when ``None``)."""
        return shared_client(self.settings.broker_url(service), self.settings)

    def redis_urls(self) -> dict[str, str]:
        """Service -> broker URL, for tools that visit every distinct Redis server. Asks Redis nothing (status
        reads use it): a service not registered here has no URL override, so it is on the global server."""
        names = dict.fromkeys([*services(), *self.settings.service_redis_urls])
        return {svc: self.settings.broker_url(svc) for svc in names}


_default: Platform | None = None
_lock = threading.Lock()


def configure(settings: Settings | None = None) -> Platform:
    """Make a platform built from ``settings`` (or the environment) the process default."""
    global _default
    settings = settings or load_settings()
    # MEETINGTASKS_INCLUDE: every process knows the service code's own task types and subscriptions.
    import_modules(settings.include)
    with _lock:
        _default = Platform(settings)
        return _default


def get_platform() -> Platform:
    if _default is None:
        return configure()
    return _default
