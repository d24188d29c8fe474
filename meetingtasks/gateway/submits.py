"""Submits of every session go to Redis together: one worker-thread hop and one round trip per batch.

While one batch is on its way to Redis the next one gathers, so under load the batches grow by themselves
and the event loop (which sends the pushes) is not crowded by a thread hop per submit. A lone submit
waits for nothing: it goes out at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from meetingtasks.enqueue.dispatcher import Dispatcher, TaskHandle

#: Most submits sent in one round trip.
MAX_BATCH = 500


class SubmitBatcher:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.pending: list[tuple[dict[str, Any], asyncio.Future[TaskHandle]]] = []
        self.wakeup: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None
        self.batches = 0

    async def submit(self, **request: Any) -> TaskHandle:
        """Queue one task (:meth:`Dispatcher.prepare` keywords); raises what the dispatch raised."""
        loop = asyncio.get_running_loop()
        if self.task is None or self.wakeup is None:
            self.wakeup = asyncio.Event()
            self.task = loop.create_task(self._run(self.wakeup), name="gateway-submits")
        future: asyncio.Future[TaskHandle] = loop.create_future()
        self.pending.append((request, future))
        self.wakeup.set()
        return await future

    async def _run(self, wakeup: asyncio.Event) -> None:
        while True:
            await wakeup.wait()
            wakeup.clear()
            while self.pending:
                batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
                self.batches += 1
                try:
                    outcomes = await asyncio.to_thread(self.dispatcher.dispatch_each, [r for r, _ in batch])
                except Exception as exc:  # Redis unreachable: every submit of the batch fails with it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
