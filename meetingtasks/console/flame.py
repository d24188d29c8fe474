"""A flame view of a kept profile, drawn on the server from pyinstrument's session JSON.

The session (:class:`meetingtasks.worker.profiling.Profile`'s ``session``) holds ``frame_records``: each sample's call
stack, outermost first, as identifiers ``function\\0file\\0line`` (pyinstrument may append ``\\x01`` and
attributes), with the time it stood for. Stacks are merged into a tree (the same frame under the same parent is
one node) and laid out top-down: a bar per node, as wide as its share of the whole time, under its caller.

Read here, without pyinstrument: the console runs where the profiler need not be installed. The view is an
``<svg>`` whose bars place themselves with ``x``/``width`` attributes in percent (no script, no ``style``
attribute: it passes a ``default-src 'self'`` Content-Security-Policy); each bar is a nested ``<svg>`` so that its
text is clipped to the bar, with a ``<title>`` for the full name on hover. Nodes narrower than
:data:`MIN_SHARE` of the total are left out (their time stays in their caller's bar), which bounds the page
whatever the profile.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

#: Bars narrower than this share of the total time are not drawn (at most 1 / MIN_SHARE bars per row).
MIN_SHARE = 0.004
#: Rows drawn at most (deeper frames are rare and too narrow to read).
MAX_DEPTH = 80
#: Pixel height of one row of bars.
ROW_PX = 20
#: Colour classes ``flame-c0`` .. (console.css), picked by the function's name so a function keeps its colour.
COLOURS = 8


@dataclass
class _Node:
    function: str
    file: str
    line: str
    time_s: float = 0.0
    children: dict[tuple[str, str, str], _Node] = field(default_factory=dict)


@dataclass(frozen=True)
class FlameBar:
    """One drawn frame: ``depth`` (row), ``left``/``width`` (percent of the total), what it names, its time."""

    depth: int
    left: float
    width: float
    function: str
    location: str
    time_s: float
    share: float

    @property
    def colour(self) -> int:
        return zlib.crc32(self.function.encode()) % COLOURS


@dataclass(frozen=True)
class Flame:
    bars: list[FlameBar]
    total_s: float
    depth: int  # rows drawn
    above: int = 0  # caller frames above the profiler's start, left out

    @property
    def height_px(self) -> int:
        return max(1, self.depth) * ROW_PX


def _identify(identifier: str) -> tuple[str, str, str]:
    name = identifier.split("\x01", 1)[0]
    parts = name.split("\x00")
    function = parts[0] or "?"
    file = parts[1] if len(parts) > 1 else ""
    line = parts[2] if len(parts) > 2 else ""
    return function, file, line


def _short(path: str, prefixes: list[str]) -> str:
    """``path`` relative to the longest ``sys.path`` entry it lies under (how pyinstrument shows files)."""
    best = ""
    for prefix in prefixes:
        if prefix and path.startswith(prefix.rstrip("/") + "/") and len(prefix) > len(best):
            best = prefix.rstrip("/") + "/"
    return path[len(best):] if best else path


def flame_of(session: dict[str, Any]) -> Flame:
    """The bars of ``session`` (pyinstrument's ``Session.to_json()``); ``ValueError`` when it is not one."""
    records = session.get("frame_records") if isinstance(session, dict) else None
    if not isinstance(records, list):
        raise ValueError("not a pyinstrument session (no frame_records)")
    # The frames above where the profiler started (the worker's own call chain down to the profiled wrapper) are
    # the same in every sample: left out, so that the view starts at the wrapper, above the handler.
    start_stack = session.get("start_call_stack")
    above = [_identify(str(i)) for i in start_stack[:-1]] if isinstance(start_stack, list) else []
    root = _Node("", "", "")
    for record in records:
        if not (isinstance(record, list | tuple) and len(record) == 2 and isinstance(record[0], list)):
            continue
        stack, time_s = record
        try:
            seconds = float(time_s)
        except (TypeError, ValueError):
            continue
        keys = [_identify(str(identifier)) for identifier in stack]
        if above and keys[:len(above)] == above:
            keys = keys[len(above):]
        node = root
        node.time_s += seconds
        for key in keys:
            node = node.children.setdefault(key, _Node(*key))
            node.time_s += seconds
    prefixes = [p for p in session.get("sys_path", []) if isinstance(p, str)]
    total = root.time_s
    bars: list[FlameBar] = []
    if total <= 0:
        return Flame(bars, 0.0, 0, len(above))
    # Walked with an explicit stack (no recursion limit on deep stacks): (node, depth, left share).
    pending: list[tuple[_Node, int, float]] = []
    left = 0.0
    for child in root.children.values():
        pending.append((child, 0, left))
        left += child.time_s / total
    deepest = 0
    while pending:
        node, depth, start = pending.pop()
        share = node.time_s / total
        if share < MIN_SHARE or depth >= MAX_DEPTH:
            continue
        # "<thread>" and "<built-in>" frames have no line worth showing (a thread's is its id).
        location = (node.file if node.file.startswith("<") and node.file != "<stdin>"
                    else f"{_short(node.file, prefixes)}:{node.line}" if node.file else "")
        bars.append(FlameBar(depth, round(start * 100, 4), round(share * 100, 4), node.function, location,
                             node.time_s, share))
        deepest = max(deepest, depth + 1)
        offset = start
        for child in node.children.values():
            pending.append((child, depth + 1, offset))
            offset += child.time_s / total
    bars.sort(key=lambda b: (b.depth, b.left))
    return Flame(bars, total, deepest, len(above))
