"""A callback type of the ``media`` service, for the test that puts that service on a Redis of its own. Loaded
only into that worker: the test process never imports it, so a pump there knows the type only by the name and
queue recorded at dispatch. Each run is recorded in ``test:remote-callbacks`` on the worker's Redis."""

from __future__ import annotations

from meetingtasks.core.registry import task_type
from meetingtasks.store.callbacks import TaskOutcome
from meetingtasks.store.platform import get_platform


@task_type("media", "t_media_outcome", payload=TaskOutcome)
def t_media_outcome(outcome: TaskOutcome) -> str:
    get_platform().redis().rpush("test:remote-callbacks", outcome.model_dump_json())
    return outcome.task_id
