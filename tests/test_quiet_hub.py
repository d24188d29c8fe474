"""The worker's event loop answers the registrations kombu and Celery repeat on every pass itself
(meetingtasks.worker.hub), and still polls every descriptor it was given, including a reused descriptor number."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kombu.asynchronous.hub import Hub
from kombu.utils.eventio import READ

from meetingtasks.worker import hub as quiet_hub
from meetingtasks.worker.hub import QuietHub, quiet


class CountingPoller:
    """The hub's real epoll poller, counting the calls that reach it."""

    def __init__(self, poller: Any) -> None:
        self.poller = poller
        self.registers = 0
        self.unregisters = 0

    def register(self, fd: Any, events: int) -> Any:
        self.registers += 1
        return self.poller.register(fd, events)

    def unregister(self, fd: Any) -> Any:
        self.unregisters += 1
        return self.poller.unregister(fd)

    def poll(self, timeout: float) -> Any:
        return self.poller.poll(timeout)

    def close(self) -> None:
        self.poller.close()


@pytest.fixture
def hub() -> Iterator[Hub]:
    loop = Hub()
    quiet(loop)
    loop.poller = CountingPoller(loop.poller)
    yield loop
    loop.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two connected sockets: the hub polls the first, the test writes to the second."""
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def readable(loop: Hub, timeout_s: float = 0.2) -> set[int]:
    return {fd for fd, event in loop.poller.poll(timeout_s) or () if event & READ}


def on_readable(fd: int) -> None:
    """A reader callback (never called: the tests poll the hub's poller themselves)."""


def test_quiet_turns_celerys_hub_into_a_quiet_hub_once() -> None:
    loop = Hub()
    try:
        quiet(loop)
        quiet(loop)
        assert type(loop) is QuietHub
    finally:
        loop.close()


def test_repeated_adds_and_removals_reach_epoll_once(hub: Hub, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    # Given a reader added on every pass of the loop, as kombu's transport does, and an idle job pipe whose writer
    # Celery's pool removes on every pass
    for _ in range(100):
        hub.add_reader(a.fileno(), on_readable, a.fileno())
        hub.remove_writer(b.fileno())
    # Then epoll saw one registration and one removal
    assert (hub.poller.registers, hub.poller.unregisters) == (1, 1)
    # And the reader is polled
    b.send(b"x")
    assert a.fileno() in readable(hub)


def test_a_changed_callback_and_a_removed_reader_go_to_epoll(hub: Hub,
                                                            pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    hub.add_reader(a.fileno(), on_readable, a.fileno())
    hub.add_reader(a.fileno(), on_readable, a.fileno(), "other args")  # not a repeat: the hub's table changes
    assert hub.readers[a.fileno()] == (on_readable, (a.fileno(), "other args"))
    hub.remove_reader(a.fileno())
    assert a.fileno() not in hub.readers
    b.send(b"x")
    assert a.fileno() not in readable(hub, 0.05)
    # A reader added again after its removal is polled again
    hub.add_reader(a.fileno(), on_readable, a.fileno())
    assert a.fileno() in readable(hub)


def test_a_reused_descriptor_number_closed_behind_the_hubs_back_is_polled_within_the_trust_period(
        hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quiet_hub, "TRUST_S", 0.2)
    a, b = socket.socketpair()
    number = a.fileno()
    hub.add_reader(number, on_readable, number)
    hub.add_reader(number, on_readable, number)  # trusted from here on
    # Given the descriptor closed without being removed from the hub (epoll forgets it by itself), and its number
    # reused by a new socket
    a.close()
    b.close()
    c, d = socket.socketpair()
    try:
        assert number in (c.fileno(), d.fileno())
        new = c if c.fileno() == number else d
        other = d if new is c else c
        other.send(b"x")
        # When the loop adds the reader again on its passes
        deadline = time.monotonic() + 2.0
        seen = False
        while not seen and time.monotonic() < deadline:
            hub.add_reader(number, on_readable, number)
            seen = number in readable(hub, 0.02)
        # Then the new socket is polled once the hub stops trusting its table
        assert seen
    finally:
        c.close()
        d.close()


def test_a_reset_hub_registers_every_descriptor_with_its_new_poller(hub: Hub,
                                                                  pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    hub.add_reader(a.fileno(), on_readable, a.fileno())
    # Given the hub reset (Celery does so after a lost connection): a new epoll instance
    hub.reset()
    # When the reader is added again with the same callback
    hub.add_reader(a.fileno(), on_readable, a.fileno())
    # Then the new poller polls it
    b.send(b"x")
    assert a.fileno() in readable(hub)
