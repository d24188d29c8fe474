"""Local event bus throughput in one process: one thread emits as fast as it can into one handler.

Two figures per round:

- **emit rate**: emit calls per second the caller makes (the caller's cost; the handler runs on the bus's
  dispatcher thread at the same time, sharing the GIL);
- **delivered rate**: events the handler received per second, from the first emit until the handler
  had them all; with ``dropped`` (buffer full) reported, never hidden.

Three runs: an unpaced burst with the default buffer (``Settings.local_bus_buffer`` = 10,000: the emitter
outruns the handler between two GIL switches, so drops show how the buffer protects the caller), the same
burst with a buffer that holds it all, and a steady 500,000 emits/s paced emitter with the default buffer.
Target: >= 500,000 emits per second into one handler.

    python -m bench.local_bus [--events 1000000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from meetingtasks.core.settings import Settings
from meetingtasks.events.bus import LocalBus

TARGET_PER_S = 500_000


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):,.0f} (min {min(values):,.0f} - max {max(values):,.0f})"


def one_round(events: int, buffer: int, pace_per_s: float | None = None) -> tuple[float, float, int]:
    bus = LocalBus(buffer)
    received = [0]

    def handler(data: object) -> None:
        received[0] += 1

    bus.on("tick", handler)
    emit = bus.emit
    start = time.perf_counter()
    if pace_per_s is None:
        for n in range(events):
            emit("tick", n)
    else:
        step = 500  # emits between two looks at the clock
        for base in range(0, events, step):
            while time.perf_counter() - start < base / pace_per_s:
                pass
            for n in range(base, min(base + step, events)):
                emit("tick", n)
    emitted_s = time.perf_counter() - start
    if not bus.flush(timeout_s=60):
        raise SystemExit("the bus did not drain within 60 s")
    delivered_s = time.perf_counter() - start
    stats = bus.stats()
    bus.stop()
    assert stats["emitted"] == events, stats
    assert stats["processed"] == received[0] == events - stats["dropped"], (stats, received[0])
    return events / emitted_s, received[0] / delivered_s, stats["dropped"]


def run(events: int, rounds: int) -> int:
    default_buffer = Settings.model_fields["local_bus_buffer"].default
    one_round(10_000, events)  # warm up
    ok = True
    runs: list[tuple[str, int, float | None]] = [
        ("unpaced burst, default buffer", default_buffer, None),
        ("unpaced burst, burst-sized buffer", events, None),
        (f"paced at {TARGET_PER_S:,}/s, default buffer", default_buffer, float(TARGET_PER_S)),
    ]
    for label, buffer, pace in runs:
        emit_rates, delivered_rates, drops = [], [], []
        for _ in range(rounds):
            emit_rate, delivered_rate, dropped = one_round(events, buffer, pace)
            emit_rates.append(emit_rate)
            delivered_rates.append(delivered_rate)
            drops.append(dropped)
        print(f"local bus, {label} ({buffer:,} events), {events:,} emits x {rounds} rounds:")
        print(f"  emit rate       {summary(emit_rates)} emits/s")
        print(f"  delivered rate  {summary(delivered_rates)} events/s into the handler")
        print(f"  dropped         {summary([float(d) for d in drops])} events (buffer full)")
        if pace is not None:
            ok = ok and statistics.median(delivered_rates) >= TARGET_PER_S * 0.98 and max(drops) == 0
        elif buffer == events:
            ok = ok and statistics.median(delivered_rates) >= TARGET_PER_S and max(drops) == 0
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other processes slow the dispatcher "
          "thread down: a paced emitter then fills the buffer)")
    print(f"target: >= {TARGET_PER_S:,} events/s delivered into one handler, none dropped: "
          f"{'met' if ok else 'NOT met'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    return run(args.events, args.rounds)


if __name__ == "__main__":
    sys.exit(main())
