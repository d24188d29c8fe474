"""The routing table: task type -> service, payload model, default priority and policy.

The :func:`task_type` decorator fills it. Celery apps built by :mod:`meetingtasks.app` bind every type
of their service, including types registered after the app exists (modules loaded with ``--include``).
"""

from __future__ import annotations

import difflib
import importlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from meetingtasks.backoff import RetryPolicy
from meetingtasks.errors import ConfigurationError, UnknownTaskType
from meetingtasks.priority import Priority
from meetingtasks.secret_fields import secret_fields as payload_secret_fields

SERVICES: tuple[str, ...] = ("user", "meeting", "media", "signaling", "ai")

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
    #: The payload's secret fields, decided once here (see :mod:`meetingtasks.secret_fields`): a type without
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


class TaskRegistry:
    """The table. Every read completes it first: a worker imports only its own service's task module at start-up
    (the four others cost ~20 ms it mostly never needs), and the rest when a lookup first misses."""

    def __init__(self) -> None:
        self._specs: dict[str, TaskTypeSpec] = {}
        self._listeners: list[Callable[[TaskTypeSpec], None]] = []
        self._lock = threading.RLock()

    def register(self, spec: TaskTypeSpec) -> None:
        if spec.service not in SERVICES:
            raise ConfigurationError(
                f"task type {spec.name!r}: unknown service {spec.service!r} (known: {', '.join(SERVICES)})"
            )
        check_client_policy(spec)
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


_builtin_loaded = False
# Lookups in a worker's threads can miss at once: each waits for the whole table. The thread that is loading it
# and looks a type up again meanwhile (a task module at import) gets what is registered so far, as before.
_builtin_lock = threading.RLock()
_builtin_loading = False


def load_builtin_types() -> None:
    """Import the five services' task modules so their types are in the table (idempotent)."""
    global _builtin_loaded, _builtin_loading
    if _builtin_loaded:
        return
    with _builtin_lock:
        if _builtin_loaded or _builtin_loading:
            return
        _builtin_loading = True
        try:
            for service in SERVICES:
                importlib.import_module(f"meetingtasks.services.{service}.tasks")
        finally:
            _builtin_loading = False
        _builtin_loaded = True


def load_service_types(service: str) -> None:
    """Import ``service``'s task module so its types are in the table (idempotent)."""
    importlib.import_module(f"meetingtasks.services.{service}.tasks")


def import_modules(modules: Iterable[str]) -> None:
    """Import ``--include`` modules; a missing module is a one-line configuration error."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(f"--include {module}: cannot import it ({exc})") from None
