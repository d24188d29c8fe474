"""A no-op task type for the benchmarks (loaded with MEETINGTASKS_INCLUDE=bench.noop_tasks)."""

from __future__ import annotations

from pydantic import BaseModel

from meetingtasks.registry import task_type


class NoopPayload(BaseModel):
    n: int = 0
    blob: str = ""


@task_type("ai", "bench_noop", payload=NoopPayload)
def bench_noop(p: NoopPayload) -> int:
    return p.n
