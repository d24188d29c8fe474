"""The soak, short: tasks over five services and four priorities with failures and delays, and events through
the bridge, while workers, the bridge and beat are SIGKILLed in turn every second and Redis restarts; the
ledger must balance (bench/soak.py has the full-size run)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.soak import Soak


def test_the_ledger_balances_with_workers_bridge_and_beat_killed_and_redis_restarted(tmp_path: Path) -> None:
    args = argparse.Namespace(tasks=2500, events=300, beat=True, kill_every=1.0, redis_restarts=1, settle_s=7.0,
                              timeout_s=240.0, seed=7, pace_s=0.05)
    ledger = Soak(tmp_path, args).run()
    print(ledger.report())
    assert ledger.kills.get("bridge", 0) >= 1 and ledger.kills.get("beat", 0) >= 1, ledger.kills
    assert ledger.worker_kills >= 7 and ledger.redis_restarts == 1
    assert ledger.dispatched == 2500 + 300
    assert ledger.accounted == ledger.dispatched, ledger.report()
    assert ledger.outcomes["DEAD_LETTERED"] == ledger.expected_dead
    assert (ledger.left_queued, ledger.left_scheduled, ledger.left_unacked) == (0, 0, 0)
    assert ledger.never_ran == 0
    assert ledger.balanced
