"""The routing table: the services, and task type -> service, payload model, default priority and policy.

Nothing here knows an application. Services and types are registrations: :func:`task_type` registers a type
(and its service, any safe name, on first use); an application that wants its services known before their
task modules are imported declares them with :func:`declare_service`, naming the modules to import lazily
(the meeting system does so in :mod:`meetingtasks.services`). The built-in applications
(:data:`meetingtasks.core.applications.BUILTIN`) are loaded on the first read of the table; an application of
your own is loaded by importing its module (``--include``, ``MEETINGTASKS_INCLUDE``).

Celery apps built by :mod:`meetingtasks.worker.app` bind every type of their service, including types registered
after the app exists (modules loaded with ``--include``).
"""

from __future__ import annotations

import difflib
import importlib
import re
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from meetingtasks.core import applications
from meetingtasks.core.backoff import RetryPolicy
from meetingtasks.core.errors import ConfigurationError, UnknownTaskType
from meetingtasks.core.priority import Priority
from meetingtasks.core.secret_fields import secret_fields as payload_secret_fields

#: A service name becomes part of queue names (``<svc>.<priority>``) and Redis keys (``P dlq:<svc>``): lowercase
#: letters, digits, ``_`` and ``-``, starting with a letter; no ``.`` (queue separator), ``:`` (key separator),
#: braces (cluster hash tags) or spaces.
SERVICE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")
#: A task type name becomes part of Redis keys (``P profiles:<type>``, ``P rate:<type>``), of Celery's task name
#: and of every log line: letters, digits, ``_``, ``.`` and ``-``, starting with a letter; no ``:`` (key
#: separator), braces, spaces or control characters.
TASK_TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,99}")

Handler = Callable[[Any], Any]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class TaskTypeSpec:
    """One registered task type. ``None`` policy fields fall back to :class:`Settings`."""

    name: str
    service: str
    payload_model: type[BaseModel]
    handler: Handler
    priority: Priority = Priority.NORMAL
    max_retries: int | None = None
    timeout_s: float | None = None
    retry_policy: RetryPolicy | None = None
    rate_limit_per_s: float | None = None
    idempotent: bool = False
    #: Gateway clients may submit it (default deny: see :func:`task_type`).
    client: bool = False
    #: The payload field naming the acting user; the gateway fills it with the token's subject.
    subject_field: str | None = None
    #: The payload's secret fields, decided once here (see :mod:`meetingtasks.core.secret_fields`): a type without
    #: any costs dispatch and the worker one attribute read.
    secret_fields: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "secret_fields", payload_secret_fields(self.payload_model))


def check_client_policy(spec: TaskTypeSpec) -> None:
    """Raise :class:`ConfigurationError` when ``spec``'s gateway policy cannot be enforced as declared."""
    if spec.subject_field is None:
        return
    if not spec.client:
        raise ConfigurationError(
            f"task type {spec.name!r}: subject_field={spec.subject_field!r} needs client=True (only gateway "
            "clients have a token subject to bind)"
        )
    fields = spec.payload_model.model_fields
    if spec.subject_field not in fields:
        raise ConfigurationError(
            f"task type {spec.name!r}: subject_field={spec.subject_field!r} is not a field of "
            f"{spec.payload_model.__name__} (fields: {', '.join(fields) or 'none'})"
        )


def check_service_name(name: object) -> str:
    """``name`` if it is a safe service name, else a one-line :class:`ConfigurationError`."""
    if isinstance(name, str) and SERVICE_NAME.fullmatch(name):
        return name
    raise ConfigurationError(
        f"service name {name!r} is not allowed: use 1-40 lowercase letters, digits, '_' or '-', starting with a "
        "letter (it becomes part of queue names and Redis keys)"
    )


def check_task_type_name(name: object) -> str:
    """``name`` if it is a safe task type name, else a one-line :class:`ConfigurationError`."""
    if isinstance(name, str) and TASK_TYPE_NAME.fullmatch(name):
        return name
    raise ConfigurationError(
        f"task type name {name!r} is not allowed: use 1-100 letters, digits, '_', '.' or '-', starting with a "
        "letter (it becomes part of Redis keys, Celery's task name and log lines)"
    )


@dataclass(frozen=True)
class ServiceSpec:
    """A known service, and where its code lives when it is not imported yet (module names, imported on demand)."""

    name: str
    tasks_module: str | None = None
    events_module: str | None = None
    #: The names of the task types ``tasks_module`` registers, declared so that a registration elsewhere under one
    #: of them is refused without importing the module (empty: not declared; the module is imported to check).
    types: tuple[str, ...] = ()


class ServiceTable:
    """The services: those of the built-in applications first, then the others in the order they became known
    (declared by an application, or named by a task type or a channel's owner)."""

    def __init__(self) -> None:
        self._specs: dict[str, ServiceSpec] = {}
        self._builtin: list[str] = []
        self._lock = threading.Lock()

    def declare(self, spec: ServiceSpec) -> ServiceSpec:
        check_service_name(spec.name)
        # The built-in applications' declarations first, so that one made unlike them is refused here, at the
        # call, whichever module a process happens to import first.
        applications.load_builtin()
        with self._lock:
            if applications.loading_builtin() and spec.name not in self._builtin:
                self._builtin.append(spec.name)
            known = self._specs.get(spec.name)
            if known is None or known == ServiceSpec(spec.name):
                self._specs[spec.name] = spec  # a declaration with modules completes one named by a type
                return spec
            if spec == ServiceSpec(spec.name) or spec == known:
                return known
            raise ConfigurationError(
                f"service {spec.name!r} is declared twice with different modules: {known} and {spec}"
            )

    def get(self, name: str) -> ServiceSpec | None:
        return self._specs.get(name)

    def names(self) -> tuple[str, ...]:
        return (*self._builtin, *(name for name in self._specs if name not in self._builtin))

    def specs(self) -> list[ServiceSpec]:
        return list(self._specs.values())


SERVICE_TABLE = ServiceTable()


def declare_service(name: str, *, tasks: str | None = None, events: str | None = None,
                    types: Iterable[str] = ()) -> ServiceSpec:
    """Make ``name`` a known service; ``tasks`` / ``events`` name the modules holding its task types and
    subscriptions, imported only when first needed (a worker imports its own service's alone). ``types`` names
    the task types ``tasks`` registers: a type of another module registered under one of those names is refused
    without importing ``tasks`` (without ``types``, such a registration imports it to check), and a type of
    ``tasks`` missing from ``types`` is refused at its import. A service named only by :func:`task_type` needs no
    declaration."""
    if isinstance(types, str):
        raise ConfigurationError(f"service {name!r}: types must be a list of task type names, not the string "
                                 f"{types!r}")
    names = tuple(check_task_type_name(t) for t in types)
    if names and tasks is None:
        raise ConfigurationError(f"service {name!r}: types are the names its tasks module registers: name the module")
    return SERVICE_TABLE.declare(ServiceSpec(name, tasks, events, names))


def services() -> tuple[str, ...]:
    """Every registered service of this process: the built-in applications' and those of imported modules.
    (Services that only a worker's ``--include`` knows are recorded in Redis: see :meth:`Platform.services`.)"""
    applications.load_builtin()
    return SERVICE_TABLE.names()


def known_services(recorded: Iterable[object] = ()) -> tuple[str, ...]:
    """:func:`services`, then the ``recorded`` names (members of ``Keys.services``, as Redis returns them) that
    are not registered here, sorted. A recorded name that is not a safe service name is ignored, never used."""
    known = list(services())
    names = sorted(n.decode(errors="replace") if isinstance(n, bytes) else str(n) for n in recorded)
    known += [n for n in dict.fromkeys(names) if n not in known and SERVICE_NAME.fullmatch(n)]
    return tuple(known)


class TaskRegistry:
    """The table. Every read completes it first: a worker imports only its own service's task module at start-up
    (the four others cost ~20 ms it mostly never needs), and the rest when a lookup first misses."""

    def __init__(self) -> None:
        self._specs: dict[str, TaskTypeSpec] = {}
        self._listeners: list[Callable[[TaskTypeSpec], None]] = []
        self._lock = threading.RLock()

    def register(self, spec: TaskTypeSpec) -> None:
        check_task_type_name(spec.name)
        try:
            check_service_name(spec.service)
        except ConfigurationError as exc:
            raise ConfigurationError(f"task type {spec.name!r}: {exc}") from None
        check_client_policy(spec)
        applications.load_builtin()
        service = SERVICE_TABLE.get(spec.service)
        if service is None:
            SERVICE_TABLE.declare(ServiceSpec(spec.service))
        elif service.types and spec.handler.__module__ == service.tasks_module and spec.name not in service.types:
            raise ConfigurationError(f"task type {spec.name!r} of {service.tasks_module} is not among the types its "
                                     f"service {service.name!r} declares: {', '.join(service.types)}")
        if spec.name not in self._specs:
            # Task modules load lazily (a worker imports its own service's alone): a type named like one of a
            # module not imported yet would take its routes in this process only. Import the module that may
            # hold that name (by the declared names: none of the meeting system's), then check.
            _import_holders(spec.name, spec.handler.__module__)
        with self._lock:
            existing = self._specs.get(spec.name)
            if existing is not None and existing.handler is not spec.handler:
                same_place = (
                    existing.handler.__module__ == spec.handler.__module__
                    and existing.handler.__qualname__ == spec.handler.__qualname__
                )
                if not same_place:
                    raise ConfigurationError(
                        f"task type {spec.name!r} is registered twice: "
                        f"{existing.handler.__module__}.{existing.handler.__qualname__} and "
                        f"{spec.handler.__module__}.{spec.handler.__qualname__}"
                    )
            self._specs[spec.name] = spec
            listeners = list(self._listeners)
        for listener in listeners:
            listener(spec)

    def subscribe(self, listener: Callable[[TaskTypeSpec], None]) -> None:
        """Call ``listener`` for every type registered from now on."""
        with self._lock:
            self._listeners.append(listener)

    def get(self, name: str) -> TaskTypeSpec:
        spec = self._specs.get(name)
        if spec is None:
            load_builtin_types()
            spec = self._specs.get(name)
        if spec is None:
            known = sorted(self._specs)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownTaskType(f"unknown task type {name!r}{hint}; known types: {', '.join(known)}")
        return spec

    def find(self, name: str) -> TaskTypeSpec | None:
        spec = self._specs.get(name)
        if spec is None:
            load_builtin_types()
            spec = self._specs.get(name)
        return spec

    def for_service(self, service: str) -> list[TaskTypeSpec]:
        load_service_types(service)
        return [s for s in self._specs.values() if s.service == service]

    def all(self) -> list[TaskTypeSpec]:
        load_builtin_types()
        return list(self._specs.values())

    def client_types(self) -> list[TaskTypeSpec]:
        """The types gateway clients may submit (declared ``client=True``)."""
        load_builtin_types()
        return [s for s in self._specs.values() if s.client]


REGISTRY = TaskRegistry()


def task_type(
    service: str,
    name: str,
    *,
    payload: type[BaseModel],
    priority: Priority | str = Priority.NORMAL,
    max_retries: int | None = None,
    timeout: float | None = None,
    retry_policy: RetryPolicy | None = None,
    rate_limit: float | None = None,
    idempotent: bool = False,
    client: bool = False,
    subject_field: str | None = None,
) -> Callable[[F], F]:
    """Register the decorated function as the handler of task type ``name`` on ``service``.

    The handler takes the validated ``payload`` model and returns something JSON-serialisable (or a
    pydantic model). ``timeout`` (seconds) is the soft time limit; ``rate_limit`` is tasks per second
    across all workers. The function is returned unchanged, so it stays callable in tests.

    Gateway clients may submit the type only when ``client=True`` (default deny: internal and maintenance
    types are reachable from service code, the CLI and the bridge, never from a WebSocket). A type that acts
    on the submitting user's own resources names the payload field that holds that user in
    ``subject_field``: the gateway fills it with the token's subject and refuses a payload naming anyone
    else, so the identity comes from the token, never from the payload. A ``subject_field`` that is not a
    field of ``payload``, or one without ``client=True``, is a :class:`ConfigurationError` at import.
    """

    def decorate(func: F) -> F:
        REGISTRY.register(
            TaskTypeSpec(
                name=name,
                service=service,
                payload_model=payload,
                handler=func,
                priority=Priority.parse(priority, Priority.NORMAL),
                max_retries=max_retries,
                timeout_s=timeout,
                retry_policy=retry_policy,
                rate_limit_per_s=rate_limit,
                idempotent=idempotent,
                client=client,
                subject_field=subject_field,
            )
        )
        return func

    return decorate


def _import_holders(name: str, registering: str) -> None:
    """Import the declared task modules not imported yet that may register ``name``: the one whose declared
    ``types`` name it, and each that declares none (not ``registering``, the module registering it now)."""
    for service in SERVICE_TABLE.specs():
        module = service.tasks_module
        if module is None or module == registering or module in sys.modules:
            continue
        if name in service.types or not service.types:
            importlib.import_module(module)


_builtin_loaded = False
# Lookups in a worker's threads can miss at once: each waits for the whole table. The thread that is loading it
# and looks a type up again meanwhile (a task module at import) gets what is registered so far, as before.
_builtin_lock = threading.RLock()
_builtin_loading = False


def load_builtin_types() -> None:
    """Import every declared service's task module (the built-in applications' first) so their types are in
    the table (idempotent)."""
    global _builtin_loaded, _builtin_loading
    if _builtin_loaded:
        return
    with _builtin_lock:
        if _builtin_loaded or _builtin_loading:
            return
        _builtin_loading = True
        try:
            applications.load_builtin()
            for spec in SERVICE_TABLE.specs():
                if spec.tasks_module:
                    importlib.import_module(spec.tasks_module)
        finally:
            _builtin_loading = False
        _builtin_loaded = True


def load_service_types(service: str) -> None:
    """Import ``service``'s declared task module, if it has one, so its types are in the table (idempotent)."""
    applications.load_builtin()
    spec = SERVICE_TABLE.get(service)
    if spec is not None and spec.tasks_module:
        importlib.import_module(spec.tasks_module)


def import_modules(modules: Iterable[str]) -> None:
    """Import ``--include`` modules; a missing module is a one-line configuration error."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(f"--include {module}: cannot import it ({exc})") from None
