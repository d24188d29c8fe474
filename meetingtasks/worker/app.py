"""The Celery app of a service: four strictly ordered queues, acks late, leases, JSON only (signed JSON
with message signing on, see :mod:`meetingtasks.core.signing`).

``create_app("ai")`` builds the app ``meetingtasks.services.ai:app`` is made of; tests build their own
with their own :class:`Settings`. Any service with task types is accepted: the built-in applications' and
those that ``include`` modules register (``meetingtasks worker billing --include myapp.billing``). Every
task type registered for the service is bound to the app, also when registered later (Celery's ``-I``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from celery import Celery, bootsteps
from celery.signals import worker_process_init, worker_shutdown
from kombu import Exchange, Queue
from kombu import transport as kombu_transports

from meetingtasks.core import kombu_json
from meetingtasks.core.errors import ConfigurationError
from meetingtasks.core.logs import install_worker_logging
from meetingtasks.core.priority import Priority, queue_name, service_queues
from meetingtasks.core.registry import (
    REGISTRY,
    TaskTypeSpec,
    check_service_name,
    import_modules,
    load_service_types,
    services,
)
from meetingtasks.core.sentinel import is_sentinel
from meetingtasks.core.settings import Settings, load_settings
from meetingtasks.core.signing import install_verifier, signer_for
from meetingtasks.core.tracing import install_worker_tracing
from meetingtasks.metrics.heartbeat import WorkerHeartbeat
from meetingtasks.store.connections import celery_broker, poll_replies
from meetingtasks.store.platform import Platform
from meetingtasks.worker import gc_tuning, transport
from meetingtasks.worker.consumer import EVENT_BUFFER_LIMIT
from meetingtasks.worker.loops import DelayedPump, LeaseRenewer
from meetingtasks.worker.task import PlatformTask
from meetingtasks.worker.transport import install_child_outcomes, settle_at_shutdown
from meetingtasks.worker.watchdog import worker_watchdog


def _run(self: PlatformTask, *args: Any, **kwargs: Any) -> Any:
    return self.execute(args, kwargs)


def bind_task(app: Celery, spec: TaskTypeSpec) -> None:
    """Make ``spec`` a Celery task of ``app`` (once)."""
    if spec.name in app.tasks:
        return
    settings: Settings = app.mt_platform.settings
    soft = spec.timeout_s or settings.default_timeout_s
    app.task(
        bind=True,
        base=PlatformTask,
        name=spec.name,
        spec=spec,
        platform=app.mt_platform,
        soft_time_limit=soft,
        time_limit=soft + settings.hard_timeout_grace_s,
        queue=queue_name(spec.service, spec.priority),
    )(_run)


def transport_options(platform: Platform, service: str) -> dict[str, Any]:
    s = platform.settings
    keys = platform.keys
    return {
        "queue_order_strategy": "priority",
        # Priority lives in the four queues; per-message priority numbers would add hidden sub-queues.
        "priority_steps": [0],
        "visibility_timeout": s.visibility_timeout_s,
        "unacked_key": keys.unacked(service),
        "unacked_index_key": keys.unacked_index(service),
        "unacked_mutex_key": keys.unacked_mutex(service),
        "unacked_mutex_expire": max(5, int(s.visibility_timeout_s)),
        "unacked_restore_interval": s.restore_interval_s,
        "unacked_restore_throttle": 1,
        "health_check_interval": 10,
        "socket_timeout": s.redis_socket_timeout_s,
        "socket_connect_timeout": s.redis_socket_timeout_s,
        "socket_keepalive": True,
        "mt_platform": platform,
        "mt_service": service,
    }


#: The workers' transport as kombu knows it in a URL prefix (``meetingtasks+socket:///path``: a unix socket).
KOMBU_TRANSPORT_ALIAS = "meetingtasks"

#: Pools by the names the settings and ``--pool`` take, where ours replaces Celery's (imported by the worker only).
POOLS = {"prefork": "meetingtasks.worker.pool:PreforkPool"}


def create_app(service: str, settings: Settings | None = None, *, include: Iterable[str] = ()) -> Celery:
    check_service_name(service)
    settings = settings or load_settings()
    # The service's code first: an unknown service is refused before anything is built.
    load_service_types(service)
    import_modules([*settings.include, *include])
    if not REGISTRY.for_service(service):
        known = [svc for svc in services() if svc != service]
        raise ConfigurationError(
            f"unknown service {service!r} (no task types registered for it); services: {', '.join(known)} (a "
            "service of your own: give the module declaring its task types with --include or MEETINGTASKS_INCLUDE)"
        )
    platform = Platform(settings)
    url = settings.broker_url(service)
    broker = celery_broker(url, settings)
    if is_sentinel(url):
        # One URL: the workers' transport takes every sentinel from mt_sentinel_url (see SentinelChannel).
        broker["broker_url"] = broker["broker_url"].split(";")[0]
    elif broker["broker_url"].startswith("redis+socket://"):
        # Kombu takes a URL's "<transport>+" prefix over broker_transport: "redis+" would put the worker on stock
        # kombu's transport (pop-then-record fetch); ours goes by an alias of its own.
        kombu_transports.TRANSPORT_ALIASES.setdefault(KOMBU_TRANSPORT_ALIAS, "meetingtasks.worker.transport:Transport")
        broker["broker_url"] = f"{KOMBU_TRANSPORT_ALIAS}+{broker['broker_url'].removeprefix('redis+')}"
    kombu_json.install()
    # Task events only while a monitor receives them (see meetingtasks.worker.task_events).
    app = Celery(f"meetingtasks.{service}", set_as_current=False, events="meetingtasks.worker.task_events:TaskEvents")
    app.mt_platform = platform
    app.mt_service = service
    queues = [Queue(q, Exchange(q, type="direct"), routing_key=q) for q in service_queues(service)]
    app.conf.update(
        broker_url=broker["broker_url"],
        broker_transport="meetingtasks.worker.transport:"
                         + ("SentinelTransport" if is_sentinel(url) else "Transport"),
        broker_transport_options={**transport_options(platform, service), **broker["broker_transport_options"]},
        broker_use_ssl=broker["broker_use_ssl"],
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        result_backend=None,
        task_ignore_result=True,
        task_queues=queues,
        task_default_queue=queue_name(service, Priority.NORMAL),
        task_default_exchange=queue_name(service, Priority.NORMAL),
        task_default_routing_key=queue_name(service, Priority.NORMAL),
        task_create_missing_queues=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.worker_concurrency,
        # Our prefork pool (see meetingtasks.worker.pool); Celery's own `--pool prefork` resolves to it as well.
        worker_pool=POOLS.get(settings.worker_pool, settings.worker_pool),
        worker_consumer="meetingtasks.worker.consumer:PlatformConsumer",
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        accept_content=["json"],
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        result_accept_content=["json"],
        timezone=settings.timezone,
        enable_utc=True,
    )
    signer = signer_for(settings)
    if signer is not None:  # message signing: accept only bodies signed by a trusted certificate
        install_verifier(app, signer)
    app.steps["consumer"].add(PlatformLoops)
    # Operations: liveness heartbeat, JSON logs, trace spans around task runs.
    app.steps["consumer"].add(WorkerHeartbeat)
    gc_tuning.install()

    def child_outcomes(**_: Any) -> None:
        install_child_outcomes(platform, service)  # in a pool child only

    def settle(**_: Any) -> None:
        settle_at_shutdown(app)

    # A prefork child's task outcomes ride back to the parent with the result (meetingtasks.worker.outcomes).
    worker_process_init.connect(child_outcomes, weak=False)
    # Sent once the pool has drained: its last results arrive after the consuming channel closed.
    worker_shutdown.connect(settle, weak=False)
    install_worker_logging(app)
    install_worker_tracing(app)

    def bind_if_ours(spec: TaskTypeSpec) -> None:
        if spec.service == service:
            bind_task(app, spec)

    REGISTRY.subscribe(bind_if_ours)
    # Our own types (imported above); the other services' (handlers dispatch to them) load on the registry's
    # first miss.
    for spec in REGISTRY.for_service(service):
        bind_task(app, spec)
    return app


class PlatformLoops(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer step that runs the lease renewer, the delayed pump and the watchdog while the worker consumes."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.loops: list[Any] = []  # each has start() and stop()

    def start(self, parent: Any) -> None:
        app = parent.app
        dispatcher = getattr(parent, "event_dispatcher", None)
        if dispatcher is not None:
            dispatcher.buffer_limit = EVENT_BUFFER_LIMIT  # flushed on a timer instead (see PlatformConsumer)
        if self.loops:
            return
        # Celery's pool classes, imported only in a worker that runs one (billiard is no import of a producer's).
        from celery.concurrency.prefork import TaskPool as PreforkPool
        from celery.concurrency.solo import TaskPool as SoloPool
        from celery.concurrency.thread import TaskPool as ThreadsPool

        from meetingtasks.worker.pool import PIPELINE_DEPTH
        from meetingtasks.worker.pool import PreforkPool as PipelinedPreforkPool

        self.loops = [LeaseRenewer(app.mt_platform, app.mt_service), DelayedPump(app.mt_platform, app.mt_service),
                      worker_watchdog(app)]
        inline = isinstance(getattr(parent, "pool", None), SoloPool)
        transport.use_inline_pool(inline)
        # A solo worker's one thread has nothing else to do while a task's Redis call waits: it polls for the reply.
        poll_replies(app.mt_platform.reply_wait if inline else None)
        pool = getattr(parent, "pool", None)
        # A threads pool's reserve waits in the channel, not in the pool's queue, where a message could not go back.
        reserve = isinstance(pool, (PreforkPool, ThreadsPool)) and app.mt_platform.settings.solo_batch_ms > 0
        threads = isinstance(pool, ThreadsPool)
        pipeline = PIPELINE_DEPTH if isinstance(pool, PipelinedPreforkPool) else 1
        transport.use_reserve(int(pool.limit) if reserve and pool is not None else 0, in_process=threads,
                              pipeline=pipeline)
        # Outcomes that wait in this process for their ack or their end (see Channel.buffer_outcome): written by a
        # timer when they wait past START_FLUSH_S.
        if inline or reserve:
            self.loops.append(transport.stale_start_flusher(app.mt_service))
        self.loops.append(transport.counts_writer(app.mt_service))
        for loop in self.loops:
            loop.start()

    def stop(self, parent: Any) -> None:
        for loop in self.loops:
            loop.stop()
        self.loops = []

    shutdown = stop
