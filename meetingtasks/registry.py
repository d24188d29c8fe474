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
    #: The payload's secret fields, decided once here (see :mod:`meetingtasks.secret_fields`): a type without
    #: any costs dispatch and the worker one attribute read.
    secret_fields: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "secret_fields", payload_secret_fields(self.payload_model))


class TaskRegistry:
    def __init__(self) -> None:
        self._specs: dict[str, TaskTypeSpec] = {}
        self._listeners: list[Callable[[TaskTypeSpec], None]] = []
        self._lock = threading.RLock()

    def register(self, spec: TaskTypeSpec) -> None:
        if spec.service not in SERVICES:
            raise ConfigurationError(
                f"task type {spec.name!r}: unknown service {spec.service!r} (known: {', '.join(SERVICES)})"
            )
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
        return self._specs.get(name)

    def for_service(self, service: str) -> list[TaskTypeSpec]:
        return [s for s in self._specs.values() if s.service == service]

    def all(self) -> list[TaskTypeSpec]:
        return list(self._specs.values())


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
) -> Callable[[F], F]:
    """Register the decorated function as the handler of task type ``name`` on ``service``.

    The handler takes the validated ``payload`` model and returns something JSON-serialisable (or a
    pydantic model). ``timeout`` (seconds) is the soft time limit; ``rate_limit`` is tasks per second
    across all workers. The function is returned unchanged, so it stays callable in tests.
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
            )
        )
        return func

    return decorate


_builtin_loaded = False


def load_builtin_types() -> None:
    """Import the five services' task modules so their types are in the table (idempotent)."""
    global _builtin_loaded
    if _builtin_loaded:
        return
    _builtin_loaded = True
    for service in SERVICES:
        importlib.import_module(f"meetingtasks.services.{service}.tasks")


def import_modules(modules: Iterable[str]) -> None:
    """Import ``--include`` modules; a missing module is a one-line configuration error."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(f"--include {module}: cannot import it ({exc})") from None
