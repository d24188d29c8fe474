"""The worker's event loop, without the registrations it repeats on every pass.

kombu's event loop (:class:`~kombu.asynchronous.hub.Hub`) hands every ``add`` and every writer removal to epoll, and
kombu and Celery repeat them on every pass of the loop: the Redis transport adds its sockets' readers again on every
tick, the prefork pool adds a result pipe's reader again after every result it reads, removes the writer of every
idle job pipe on every tick and adds every idle job pipe's writer again while jobs wait. epoll answers each repeat
with an error (``EEXIST``, ``ENOENT``) that kombu's poller catches: a system call and a Python exception each, about
ten per task in a prefork worker's parent (strace of a one-process drain).

:class:`QuietHub` answers a repeat itself: adding a descriptor that already has the same callback (or the same
consolidated writer) in the same direction, or removing a writer the hub does not have, would change nothing in
epoll, so it returns at once. The hub's tables can disagree with epoll only when a descriptor is closed without
being removed from the hub (epoll forgets a closed descriptor by itself) and its number is reused by a new one; so
the hub trusts its tables for at most :data:`TRUST_S` per descriptor, after which its next repeat goes to epoll as
before and re-registers it.
"""

from __future__ import annotations

import time
from typing import Any

from kombu.asynchronous.hub import Hub
from kombu.utils.compat import fileno
from kombu.utils.eventio import READ

#: How long a descriptor's registration, once made, is taken from the hub's tables without asking epoll (s).
TRUST_S = 1.0


class QuietHub(Hub):  # type: ignore[misc]
    """:class:`~kombu.asynchronous.hub.Hub` that skips the repeats described in the module docstring."""

    _mt_trusted: set[tuple[str, int]]
    _mt_trust_until: float

    def _mt_trusted_now(self) -> set[tuple[str, int]]:
        """The registrations (``("r" | "w", fd)``) and writer removals (``("-w", fd)``) this hub made itself in the
        current trust period, which a repeat may take as still in place."""
        now = time.monotonic()
        if now >= self._mt_trust_until:
            self._mt_trusted = set()
            self._mt_trust_until = now + TRUST_S
        return self._mt_trusted

    def _create_poller(self) -> None:
        """A new epoll instance (the hub's reset after a lost connection) holds none of the old registrations."""
        self._mt_trusted, self._mt_trust_until = set(), 0.0
        super()._create_poller()

    def add(self, fd: Any, callback: Any, flags: int, args: tuple[Any, ...] = (), consolidate: bool = False) -> Any:
        fd = fileno(fd)
        reading = bool(flags & READ)
        key = ("r" if reading else "w", fd)
        trusted = self._mt_trusted_now()
        if key in trusted:
            table = self.readers if reading else self.writers
            if consolidate:
                same = fd in self.consolidate and fd in table and table[fd] is None
            else:
                same = table.get(fd) == (callback, args)
            if same:
                return None
        result = super().add(fd, callback, flags, args, consolidate)
        trusted.add(key)
        return result

    def remove_writer(self, fd: Any) -> None:
        number = fileno(fd)
        trusted = self._mt_trusted_now()
        if number not in self.writers and ("-w", number) in trusted:
            return
        super().remove_writer(fd)
        trusted.add(("-w", number))


def quiet(hub: Any) -> None:
    """Make Celery's worker hub a :class:`QuietHub` (before the pool and the transport register with it: they keep
    its bound methods). Celery builds the hub itself (``celery.worker.components.Hub``) with kombu's class; any other
    class is left as it is."""
    if type(hub) is Hub:
        hub._mt_trusted = set()
        hub._mt_trust_until = 0.0
        hub.__class__ = QuietHub
