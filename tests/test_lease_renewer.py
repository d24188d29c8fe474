"""The lease renewer (meetingtasks.worker.loops.LeaseRenewer) re-scores the leases its worker holds, on a real Redis."""

from __future__ import annotations

import time

import redis

from meetingtasks.store.platform import Platform
from meetingtasks.worker.loops import LeaseRenewer, _held_sources, add_held_source


def test_the_renewer_rescores_held_leases_in_whole_seconds_rounded_up_and_never_brings_back_an_acked_one(
        platform: Platform, r: redis.Redis) -> None:
    # Given two leases from long ago, one of them held by this worker, and a held tag whose lease is gone (acked)
    index = platform.keys.unacked_index("ai")
    r.zadd(index, {"tag-held": 100.5, "tag-other": 100.5})

    def held() -> list[str]:
        return ["tag-held", "tag-acked"]

    add_held_source(held)
    renewer = LeaseRenewer(platform, "ai")
    try:
        before = time.time()
        # When it renews
        assert renewer.renew() == 2
    finally:
        _held_sources.remove(held)
        renewer.client.close()
    # Then the held lease starts again now, in whole seconds rounded up (see worker.loops.lease_score); the other
    # lease is left alone, and the acked one is not written back
    score = r.zscore(index, "tag-held")
    assert score is not None and score == int(score) and before <= score < time.time() + 1
    assert r.zscore(index, "tag-other") == 100.5
    assert r.zscore(index, "tag-acked") is None
