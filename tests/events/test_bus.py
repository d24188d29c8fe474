"""The local event bus: emit never blocks, handlers are isolated, a full buffer drops and counts."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from meetingtasks.events.bus import LocalBus
from tests.support.waiting import wait_for


@pytest.fixture
def bus() -> LocalBus:
    bus = LocalBus(100)
    yield bus
    bus.stop()
    bus.stop()  # safe twice


def test_handlers_get_the_events_of_their_name(bus: LocalBus) -> None:
    got: list[tuple[str, object]] = []
    bus.on("a", lambda data: got.append(("first", data)))

    @bus.on("a")
    def second(data: object) -> None:
        got.append(("second", data))

    bus.on("b", lambda data: got.append(("b", data)))
    for n in range(3):
        bus.emit("a", n)
    bus.emit("nobody-listens", 0)
    assert bus.flush(5)
    assert [d for who, d in got if who == "first"] == [0, 1, 2]
    assert [d for who, d in got if who == "second"] == [0, 1, 2]
    assert bus.stats() == {"emitted": 4, "processed": 6, "failed": 0, "dropped": 0, "pending": 0}


def test_a_failing_handler_is_isolated_and_counted(bus: LocalBus) -> None:
    got: list[int] = []

    def broken(data: int) -> None:
        raise RuntimeError("handler bug")

    bus.on("tick", broken)
    bus.on("tick", got.append)
    for n in range(5):
        bus.emit("tick", n)
    assert bus.flush(5)
    assert got == [0, 1, 2, 3, 4]
    assert bus.stats()["failed"] == 5 and bus.stats()["processed"] == 5


def test_emit_never_waits_for_a_slow_handler_and_a_full_buffer_drops(bus: LocalBus) -> None:
    # Given a handler that blocks until released, holding the dispatcher thread
    release = threading.Event()
    started = threading.Event()

    def slow(data: int) -> None:
        started.set()
        release.wait(10)

    bus.on("work", slow)
    bus.emit("work", -1)
    assert started.wait(5)

    # When 150 events are emitted into a buffer of 100
    begin = time.perf_counter()
    accepted = [bus.emit("work", n) for n in range(150)]
    elapsed = time.perf_counter() - begin

    # Then emit returned at once each time, 100 were buffered and 50 dropped and counted
    assert elapsed < 0.5
    assert accepted.count(True) == 100 and accepted.count(False) == 50
    assert bus.stats()["dropped"] == 50 and bus.stats()["pending"] == 100
    release.set()
    assert bus.flush(5)
    assert bus.stats() == {"emitted": 151, "processed": 101, "failed": 0, "dropped": 50, "pending": 0}


def test_off_removes_a_handler(bus: LocalBus) -> None:
    got: list[int] = []
    bus.on("x", got.append)
    bus.emit("x", 1)
    assert bus.flush(5)
    assert bus.off("x", got.append) is True
    assert bus.off("x", got.append) is False
    bus.emit("x", 2)
    assert bus.flush(5)
    assert got == [1]


def test_async_handlers_run_on_the_loop_they_were_registered_on(bus: LocalBus) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        got: list[tuple[int, bool]] = []

        async def handler(data: int) -> None:
            await asyncio.sleep(0)
            got.append((data, asyncio.get_running_loop() is loop))

        async def broken(data: int) -> None:
            raise ValueError("async bug")

        bus.on("e", handler)
        bus.on("e", broken)
        for n in range(10):
            bus.emit("e", n)
        deadline = loop.time() + 5
        while len(got) < 10 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert sorted(got) == [(n, True) for n in range(10)]
        while bus.stats()["failed"] < 10 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert bus.stats()["processed"] == 10 and bus.stats()["failed"] == 10

    asyncio.run(scenario())


def test_async_handlers_registered_outside_a_loop_get_the_bus_loop(bus: LocalBus) -> None:
    got: list[int] = []

    async def handler(data: int) -> None:
        got.append(data)

    bus.on("e", handler)
    bus.emit("e", 7)
    wait_for(lambda: got == [7], 5, message="the async handler")
    assert bus.flush(5)
    assert bus.stats()["processed"] == 1


def test_the_default_bus_uses_the_buffer_setting(platform) -> None:
    from meetingtasks.events import bus as default

    default._default = None
    try:
        got: list[int] = []
        default.on("d", got.append)
        assert default.emit("d", 1)
        wait_for(lambda: got == [1], 5, message="the default bus handler")
        assert default.default_bus().capacity == platform.settings.local_bus_buffer
        assert default.off("d", got.append)
    finally:
        default.default_bus().stop()
        default._default = None
