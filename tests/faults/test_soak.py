"""The soak, short: tasks over five services and four priorities with failures and delays, and events through
the bridge, while workers, the bridge and beat are SIGKILLed in turn every second, Redis restarts, Redis
refuses every write for a while (out of memory, then as a read-only replica) and hostile items are pushed
onto the queues among the traffic; the ledger must balance (bench/soak.py has the full-size run)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench.soak import Soak

# Slow tier: fault injection (kills, restarts, outages, refused writes) waits out real timeouts.
pytestmark = pytest.mark.slow


def test_the_ledger_balances_through_kills_restarts_refused_writes_and_hostile_items(tmp_path: Path) -> None:
    args = argparse.Namespace(tasks=2500, events=300, beat=True, kill_every=1.0, redis_restarts=1, settle_s=7.0,
                              timeout_s=240.0, seed=7, pace_s=0.05, refuse_writes=2, refuse_s=1.5, hostile=40)
    ledger = Soak(tmp_path, args).run()
    print(ledger.report())
    assert ledger.kills.get("bridge", 0) >= 1 and ledger.kills.get("beat", 0) >= 1, ledger.kills
    assert ledger.worker_kills >= 7 and ledger.redis_restarts == 1
    assert ledger.dispatched == 2500 + 300
    assert ledger.accounted == ledger.dispatched, ledger.report()
    assert ledger.outcomes["DEAD_LETTERED"] == ledger.expected_dead
    assert (ledger.left_queued, ledger.left_scheduled, ledger.left_unacked) == (0, 0, 0)
    assert ledger.never_ran == 0
    assert ledger.write_refusals == {"oom": 1, "readonly": 1}
    assert ledger.hostile.total() == 40
    assert (ledger.hostile_dead, ledger.hostile_ran) == (40, 0), ledger.report()
    assert ledger.balanced
