"""Redis clients built from settings: TLS verified by default, one client per URL per process, and connections
that report Redis refusing writes as the refusal it is wherever it is met."""

from __future__ import annotations

import functools
import os
import ssl
import threading
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import redis
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError
from redis.sentinel import DEMOTED_MASTER_UNBLOCKED_ERROR, MasterNotFoundError, Sentinel, SentinelManagedConnection

from meetingtasks.core.sentinel import SentinelUrl, is_sentinel
from meetingtasks.core.settings import Settings
from meetingtasks.store.reply_wait import ReplyWait

_CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
_lock = threading.Lock()
_clients: dict[tuple[int, str], redis.Redis] = {}
#: This process's id, kept current across forks (shared_client runs per task; os.getpid() is a system call).
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


#: Redis will not take writes now: a read-only replica (what a client meets during a failover, before it learns the
#: new primary) or out of memory with ``noeviction``. Callers wait and retry (or reconnect); never a task failure.
WRITES_REFUSED: tuple[type[ResponseError], ...] = (ReadOnlyError, OutOfMemoryError)

# Redis 6 reports a refusal met inside a Lua script as a plain script error carrying the code after a dash
# ("Error running script (call to f_...): @user_script:2: ... -READONLY You can't write ..."); Redis 7 keeps the
# code itself. Every script of the platform and of kombu writes, so this is where most refusals surface.
_SCRIPT_REFUSALS = (("-READONLY ", ReadOnlyError), ("-OOM ", OutOfMemoryError))


def as_refusal(error: ResponseError) -> ResponseError:
    """``error`` as :data:`WRITES_REFUSED` type when it is a script error that carries a write refusal (Redis 6),
    else unchanged."""
    if type(error) is ResponseError:
        text = str(error)
        if text.startswith("Error running script"):
            for marker, refusal in _SCRIPT_REFUSALS:
                if marker in text:
                    return refusal(text)
    return error


#: How this process's platform connections wait for a reply; None (the default) blocks at once. See
#: :func:`poll_replies`.
_reply_wait: ReplyWait | None = None


def poll_replies(wait: ReplyWait | None) -> None:
    """Make every platform connection of this process (plain, TLS, Unix socket, Sentinel-managed) poll its socket
    for a reply with ``wait`` before it blocks; None: block at once.

    A solo worker sets it: its one thread has nothing else to run while a task's Redis call waits, and a blocked
    thread takes 50-70 us to be woken for a reply Redis sends in about 20 us (see
    :mod:`meetingtasks.store.reply_wait`). Prefork and threads workers do not: their other processes and threads
    need the CPU the polling would take (their drains of counting tasks were slower with it, solo's faster)."""
    global _reply_wait
    _reply_wait = wait


def _before_read(connection: Any) -> None:
    """What every platform connection does before it reads a reply (see :func:`poll_replies`)."""
    wait = _reply_wait
    if wait is not None:
        wait.before_read(connection)


def reply_polling() -> ReplyWait | None:
    """How this process's platform connections wait for a reply (see :func:`poll_replies`)."""
    return _reply_wait


class _RefusalsAsTheyAre:
    """Mixin of a redis-py connection: a refusal raised inside a script comes out as the refusal it is (see
    :func:`as_refusal`), and so does one among a transaction's replies. One extra call per reply. Waits for the
    reply as :func:`poll_replies` says."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        _before_read(self)
        try:
            response = super().read_response(*args, **kwargs)  # type: ignore[misc]
        except ResponseError as exc:
            raise as_refusal(exc) from None
        if type(response) is list:  # EXEC's replies carry their errors as values
            for i, item in enumerate(response):
                if isinstance(item, ResponseError):
                    response[i] = as_refusal(item)
        return response


class Connection(_RefusalsAsTheyAre, redis.Connection):
    pass


class SSLConnection(_RefusalsAsTheyAre, redis.SSLConnection):
    pass


class UnixDomainSocketConnection(_RefusalsAsTheyAre, redis.UnixDomainSocketConnection):
    pass


def with_refusals_as_they_are(cls: type[redis.UnixDomainSocketConnection]) -> type[redis.UnixDomainSocketConnection]:
    """``cls`` (a socket connection class kombu picked itself, e.g. for ``redis+socket://``) reporting refusals as
    :class:`UnixDomainSocketConnection` does; ``cls`` itself when it does already."""
    if issubclass(cls, _RefusalsAsTheyAre):
        return cls
    return type(cls.__name__, (_RefusalsAsTheyAre, cls), {})


class _FollowsFailover:
    """Mixin of a Sentinel-managed connection: a primary that turned replica (``READONLY``, or the ``UNBLOCKED``
    it answers blocked commands with when demoted) drops the connection, so that the next one asks the sentinels
    for the new primary. The refusal itself goes on as it is (callers wait and retry, see
    :data:`WRITES_REFUSED`), not as redis-py's ``ConnectionError``, which would tell a dispatch that its task
    may have been queued when nothing was. Waits for the reply as :func:`poll_replies` says."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        _before_read(self)
        try:
            response = redis.Connection.read_response(self, *args, **kwargs)  # type: ignore[arg-type]
        except ResponseError as exc:
            refusal = as_refusal(exc)
            if isinstance(refusal, ReadOnlyError) or str(exc).startswith(DEMOTED_MASTER_UNBLOCKED_ERROR):
                self.disconnect()  # type: ignore[attr-defined]
            raise refusal from None
        if type(response) is list:
            for i, item in enumerate(response):
                if isinstance(item, ResponseError):
                    response[i] = refusal = as_refusal(item)
                    if isinstance(refusal, ReadOnlyError):
                        self.disconnect()  # type: ignore[attr-defined]
        return response


class SentinelConnection(_FollowsFailover, SentinelManagedConnection):
    pass


class SentinelSSLConnection(_FollowsFailover, SentinelManagedConnection, redis.SSLConnection):
    pass


def no_primary_text(sentinels: list[Any], master_name: str, error: MasterNotFoundError) -> str:
    """One line for no primary found: which sentinels, which master, and whether some did not answer. Redis-py's
    own text carries the repr of each sentinel's client, pool and connection (~1,500 characters of internals)."""
    where = [c.connection_pool.connection_kwargs for c in sentinels]
    hosts = ",".join(f"{kwargs.get('host')}:{kwargs.get('port')}" for kwargs in where)
    if str(error) == f"No master found for {master_name!r}":  # every sentinel answered
        return f"the sentinels {hosts} know no healthy primary of master {master_name!r} (is the master name right?)"
    return (f"no sentinel of {hosts} named a primary of master {master_name!r} (not every sentinel answered: are "
            "they running and reachable?)")


class PlatformSentinel(Sentinel):
    """redis-py's ``Sentinel`` whose "no primary" error is :func:`no_primary_text`'s one line."""

    def discover_master(self, service_name: str) -> Any:
        try:
            return super().discover_master(service_name)
        except MasterNotFoundError as exc:
            raise MasterNotFoundError(no_primary_text(self.sentinels, service_name, exc)) from None


@functools.cache
def _async_platform_sentinel() -> type[Any]:
    """:class:`PlatformSentinel` for redis.asyncio (the gateway's live feed), made at first use: most processes
    never import redis.asyncio."""
    from redis.asyncio.sentinel import Sentinel as AsyncSentinel

    class AsyncPlatformSentinel(AsyncSentinel):
        async def discover_master(self, service_name: str) -> Any:
            try:
                return await super().discover_master(service_name)
            except MasterNotFoundError as exc:
                raise MasterNotFoundError(no_primary_text(self.sentinels, service_name, exc)) from None

    return AsyncPlatformSentinel


_CONNECTION_CLASSES: dict[str, type[redis.Connection] | type[redis.UnixDomainSocketConnection]] = {
    "redis": Connection, "rediss": SSLConnection, "unix": UnixDomainSocketConnection}


def ssl_options(settings: Settings) -> dict[str, Any]:
    """TLS options for redis-py and kombu. ``rediss://`` verifies certificates unless told otherwise."""
    opts: dict[str, Any] = {"ssl_cert_reqs": _CERT_REQS[settings.redis_tls_cert_reqs]}
    if settings.redis_tls_ca_certs:
        opts["ssl_ca_certs"] = settings.redis_tls_ca_certs
    if settings.redis_tls_certfile:
        opts["ssl_certfile"] = settings.redis_tls_certfile
    if settings.redis_tls_keyfile:
        opts["ssl_keyfile"] = settings.redis_tls_keyfile
    return opts


def is_tls(url: str) -> bool:
    return urlsplit(url).scheme == "rediss"


def is_unix_socket(url: str) -> bool:
    return urlsplit(url).scheme == "unix"


def kombu_socket_url(url: str) -> str:
    """A ``unix://[user:password@]/path?db=N`` URL (redis-py's spelling) in kombu's:
    ``redis+socket://[user:password@]/path?virtual_host=N``. Kombu reads a ``unix://`` path as the db number; it
    takes the password only from the user part, so a ``?password=`` moves there."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    password = parts.password
    username = parts.username
    rest: list[tuple[str, str]] = []
    for key, value in query:
        if key == "db":
            rest.append(("virtual_host", value))
        elif key == "password":
            password = password or value
        elif key == "username":
            username = username or value
        else:
            rest.append((key, value))
    auth = ""
    if username or password:
        auth = f"{quote(unquote(username or ''), safe='')}:{quote(unquote(password or ''), safe='')}@"
    query_text = urlencode(rest)
    return f"redis+socket://{auth}{parts.path}{'?' if query_text else ''}{query_text}"


def celery_broker(url: str, settings: Settings) -> dict[str, Any]:
    """Celery's broker settings for ``url``: the URL in kombu's spelling, its TLS options and, for a Sentinel
    URL, the transport options that name the master and reach the sentinels (merge them into the app's own
    ``broker_transport_options``). The one translation of the platform's URLs for Celery: workers, beat and
    Flower all take theirs from here."""
    if is_unix_socket(url):
        return {"broker_url": kombu_socket_url(url), "broker_use_ssl": None, "broker_transport_options": {}}
    if not is_sentinel(url):
        return {"broker_url": url, "broker_use_ssl": ssl_options(settings) if is_tls(url) else None,
                "broker_transport_options": {}}
    target = SentinelUrl.parse(url)
    return {
        "broker_url": target.kombu_url(),
        "broker_use_ssl": ssl_options(settings) if target.tls else None,
        "broker_transport_options": {"master_name": target.master_name,
                                     "sentinel_kwargs": sentinel_options(target, settings),
                                     # Without the primary's credentials: Celery prints transport options in
                                     # plain (`celery report`); they come with broker_url, which it masks.
                                     "mt_sentinel_url": target.without_credentials()},
    }


def new_client(url: str, settings: Settings, **kwargs: Any) -> redis.Redis:
    """A fresh client for ``url`` (password, ACL user and db taken from the URL); for a Sentinel URL, a client of
    the primary the sentinels name, which follows a failover by itself (see :func:`sentinel_client`)."""
    if is_sentinel(url):
        return sentinel_client(SentinelUrl.parse(url), settings, **kwargs)
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_socket_timeout_s,
        "socket_connect_timeout": settings.redis_socket_timeout_s,
        "health_check_interval": 10,
        "retry_on_timeout": False,
    }
    if is_tls(url):
        options.update(ssl_options(settings))
    options["connection_class"] = _CONNECTION_CLASSES.get(urlsplit(url).scheme, Connection)
    options.update(kwargs)
    return redis.Redis.from_url(url, **options)


def sentinel_options(target: SentinelUrl, settings: Settings) -> dict[str, Any]:
    """Options of the connections to the sentinels themselves (their password, TLS, timeouts), for redis-py's
    ``Sentinel`` and kombu's ``sentinel_kwargs`` alike."""
    options: dict[str, Any] = {"socket_timeout": settings.redis_socket_timeout_s,
                               "socket_connect_timeout": settings.redis_socket_timeout_s}
    if settings.redis_sentinel_password is not None:
        options["password"] = settings.redis_sentinel_password.get_secret_value()
    if target.tls:
        options.update(ssl=True, **ssl_options(settings))
    return options


def sentinel_client(target: SentinelUrl, settings: Settings, **kwargs: Any) -> redis.Redis:
    """A client of the primary of ``target``'s master name. Each new connection asks the sentinels where the
    primary is; a connection to a primary that was demoted is dropped at its first refusal, and one to a dead
    primary fails as any lost connection does, so the caller's next try lands on the new primary."""
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_socket_timeout_s,
        "socket_connect_timeout": settings.redis_socket_timeout_s,
        "health_check_interval": 10,
        "retry_on_timeout": False,
        "db": target.db,
        "username": target.username,
        "password": target.password,
        "connection_class": SentinelSSLConnection if target.tls else SentinelConnection,
    }
    if target.tls:
        options.update(ssl_options(settings))
    options.update(kwargs)
    manager = PlatformSentinel(list(target.sentinels), sentinel_kwargs=sentinel_options(target, settings))
    client: redis.Redis = manager.master_for(target.master_name, redis.Redis, **options)
    return client


def new_async_client(url: str, settings: Settings, **kwargs: Any) -> Any:
    """An asyncio client for ``url`` (the gateway's live feed), following a Sentinel-managed primary as
    :func:`sentinel_client` does. Typed ``Any``: redis.asyncio's client is generic in ways the callers ignore."""
    import redis.asyncio as aioredis

    options: dict[str, Any] = {
        "socket_timeout": settings.redis_socket_timeout_s,
        "socket_connect_timeout": settings.redis_socket_timeout_s,
        "health_check_interval": 10,
    }
    if not is_sentinel(url):
        if is_tls(url):
            options.update(ssl_options(settings))
        return aioredis.Redis.from_url(url, **options, **kwargs)
    target = SentinelUrl.parse(url)
    options.update(db=target.db, username=target.username, password=target.password, **kwargs)
    if target.tls:
        options.update(ssl=True, **ssl_options(settings))
    manager = _async_platform_sentinel()(list(target.sentinels), sentinel_kwargs=sentinel_options(target, settings))
    return manager.master_for(target.master_name, aioredis.Redis, **options)


def shared_client(url: str, settings: Settings) -> redis.Redis:
    """The client for ``url`` shared within this process; a forked child gets its own pool."""
    key = (_pid, url)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = new_client(url, settings)
    return client


def reset_shared_clients() -> None:
    """Drop every shared client (tests that restart Redis on a new port call this)."""
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
