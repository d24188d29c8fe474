"""The signaling service's once-scripts, called directly (``meetingtasks/services/lua/signaling_*.lua``), and the
session rules they share (``prelude/session.lua``)."""

from __future__ import annotations

import pytest
import redis

from meetingtasks.services.operation import once_script
from meetingtasks.store.platform import Platform
from tests.lua.conftest import Change

OPEN = once_script("signaling_open")
HEARTBEAT = once_script("signaling_heartbeat")
CLOSE = once_script("signaling_close")
OFFER = once_script("signaling_offer")
ANSWER = once_script("signaling_answer")
ICE = once_script("signaling_ice")
CLOSE_SILENT = once_script("signaling_close_silent")


class Session:
    """The keys of session ``s-1``."""

    def __init__(self, platform: Platform) -> None:
        self.hash, self.ice = platform.keys.signal("s-1"), platform.keys.signal_ice("s-1")
        self.alive = platform.keys.signals_alive


@pytest.fixture
def s(platform: Platform) -> Session:
    return Session(platform)


def test_open_opens_a_session_afresh_or_keeps_an_open_one_alive(s: Session, r: redis.Redis, change: Change) -> None:
    keys = [s.hash, s.ice, s.alive]
    assert change(OPEN, keys, ["s-1", "u-1", "m-1", "1.0"]) == {"opened": True}
    assert r.hgetall(s.hash) == {b"user_id": b"u-1", b"meeting_id": b"m-1", b"state": b"open", b"opened_at": b"1.0",
                                 b"last_seen": b"1.0"}
    assert r.zscore(s.alive, "s-1") == 1.0
    assert change(OPEN, keys, ["s-1", "u-2", "", "2.0"]) == {"already": True, "state": "open"}
    assert r.hmget(s.hash, "user_id", "last_seen") == [b"u-1", b"2.0"] and r.zscore(s.alive, "s-1") == 2.0
    # A closed session opens again with nothing of its last life: no candidates, no offer.
    r.hset(s.hash, mapping={"state": "closed", "offer": "sdp"})
    r.hset(s.ice, "c", "{}")
    assert change(OPEN, keys, ["s-1", "u-2", "", "3.0"]) == {"opened": True}
    assert not r.exists(s.ice) and r.hget(s.hash, "offer") is None and r.hget(s.hash, "user_id") == b"u-2"


def test_heartbeat_is_a_partys_sign_of_life(s: Session, r: redis.Redis, change: Change) -> None:
    keys = [s.hash, s.alive]
    assert change(HEARTBEAT, keys, ["s-1", "u-1", "5.0"]) == {"refused": "unknown"}
    r.hset(s.hash, mapping={"state": "connected", "user_id": "u-1", "peer": "u-2"})
    assert change(HEARTBEAT, keys, ["s-1", "u-3", "5.0"]) == {"refused": "not_party"}
    assert change(HEARTBEAT, keys, ["s-1", "u-2", "5.0"]) == {"alive": True, "state": "connected"}
    assert r.hget(s.hash, "last_seen") == b"5.0" and r.zscore(s.alive, "s-1") == 5.0
    r.hset(s.hash, "state", "closed")
    assert change(HEARTBEAT, keys, ["s-1", "u-1", "6.0"]) == {"refused": "closed"}


def test_close_lets_a_party_end_a_session(s: Session, r: redis.Redis, change: Change) -> None:
    keys = [s.hash, s.ice, s.alive]
    assert change(CLOSE, keys, ["s-1", "u-1", "bye", "7.0", 600]) == {"refused": "unknown"}
    r.hset(s.hash, mapping={"state": "open", "user_id": "u-1", "meeting_id": "m-1"})
    r.hset(s.ice, "c", "{}")
    r.zadd(s.alive, {"s-1": 1})
    assert change(CLOSE, keys, ["s-1", "u-3", "bye", "7.0", 600]) == {"refused": "not_party"}
    assert change(CLOSE, keys, ["s-1", "u-1", "bye", "7.0", 600]) == {"closed": True, "meeting_id": "m-1",
                                                                      "user_id": "u-1"}
    assert r.hmget(s.hash, "state", "closed_at", "reason") == [b"closed", b"7.0", b"bye"]
    assert r.zscore(s.alive, "s-1") is None and 0 < r.ttl(s.hash) <= 600 and 0 < r.ttl(s.ice) <= 600
    assert change(CLOSE, keys, ["s-1", "u-1", "again", "8.0", 600]) == {"already": True}


def test_offer_opens_or_renegotiates_a_session(s: Session, r: redis.Redis, change: Change) -> None:
    keys = [s.hash, s.alive]
    assert change(OFFER, keys, ["s-1", "u-1", "u-2", "sdp-1", "m-1", "1.0"]) == {"offered": True, "meeting_id": "m-1"}
    assert r.hmget(s.hash, "user_id", "opened_at", "state", "offer", "offer_from", "offer_to", "peer") == [
        b"u-1", b"1.0", b"offered", b"sdp-1", b"u-1", b"u-2", b"u-2"]
    assert r.zscore(s.alive, "s-1") == 1.0
    assert change(OFFER, keys, ["s-1", "u-3", "u-1", "sdp-x", "", "2.0"]) == {"refused": "not_party"}
    # The peer renegotiates a connected session: the answer goes, the meeting stays.
    r.hset(s.hash, mapping={"state": "connected", "answer": "a", "answer_from": "u-2"})
    assert change(OFFER, keys, ["s-1", "u-2", "u-1", "sdp-2", "m-9", "3.0"]) == {"offered": True,
                                                                                "meeting_id": "m-1"}
    assert r.hmget(s.hash, "state", "offer_from", "peer", "answer") == [b"offered", b"u-2", b"u-1", None]
    r.hset(s.hash, "state", "closed")
    assert change(OFFER, keys, ["s-1", "u-1", "u-2", "sdp-3", "", "4.0"]) == {"refused": "closed"}


def test_answer_connects_the_offer_it_answers(s: Session, r: redis.Redis, change: Change) -> None:
    keys = [s.hash, s.alive]
    assert change(ANSWER, keys, ["s-1", "u-2", "u-1", "ans", "2.0"]) == {"refused": "unknown"}
    r.hset(s.hash, mapping={"state": "open", "user_id": "u-1", "meeting_id": "m-1"})
    assert change(ANSWER, keys, ["s-1", "u-2", "u-1", "ans", "2.0"]) == {"refused": "no_offer", "state": "open"}
    r.hset(s.hash, mapping={"state": "offered", "offer_from": "u-1", "offer_to": "u-2"})
    assert change(ANSWER, keys, ["s-1", "u-3", "u-1", "ans", "2.0"]) == {"refused": "mismatch", "offer_from": "u-1"}
    assert change(ANSWER, keys, ["s-1", "u-2", "u-1", "ans", "2.0"]) == {"connected": True, "meeting_id": "m-1",
                                                                         "offer_from": "u-1"}
    assert r.hmget(s.hash, "state", "answer", "answer_from", "last_seen") == [b"connected", b"ans", b"u-2", b"2.0"]
    assert r.zscore(s.alive, "s-1") == 2.0
    r.hset(s.hash, "state", "closed")
    assert change(ANSWER, keys, ["s-1", "u-2", "u-1", "ans", "3.0"]) == {"refused": "closed"}


def test_ice_adds_a_partys_candidate_once(s: Session, r: redis.Redis, change: Change) -> None:
    keys = [s.hash, s.ice, s.alive]
    assert change(ICE, keys, ["s-1", "u-1", "cand-1", "{}", "4.0"]) == {"refused": "unknown"}
    r.hset(s.hash, mapping={"state": "offered", "user_id": "u-1", "peer": "u-2"})
    assert change(ICE, keys, ["s-1", "u-3", "cand-1", "{}", "4.0"]) == {"refused": "not_party"}
    assert change(ICE, keys, ["s-1", "u-2", "cand-1", '{"a":1}', "4.0"]) == {"added": True, "meeting_id": ""}
    assert r.hget(s.ice, "cand-1") == b'{"a":1}' and r.zscore(s.alive, "s-1") == 4.0
    assert change(ICE, keys, ["s-1", "u-1", "cand-1", '{"a":2}', "5.0"]) == {"duplicate": True}
    assert r.hget(s.ice, "cand-1") == b'{"a":1}' and r.hget(s.hash, "last_seen") == b"5.0"
    r.hset(s.hash, "state", "closed")
    assert change(ICE, keys, ["s-1", "u-1", "cand-2", "{}", "6.0"]) == {"refused": "closed"}


def test_close_silent_closes_the_sessions_silent_since_a_time(platform: Platform, r: redis.Redis,
                                                             change: Change) -> None:
    keys = platform.keys
    suffix = keys.signal_ice("x")[len(keys.signal("x")):]
    for sid, seen, state in (("s-1", 10, "open"), ("s-2", 20, "closed"), ("s-3", 30, "connected"), ("s-4", 90, "open")):
        r.hset(keys.signal(sid), mapping={"state": state, "user_id": "u-" + sid, "meeting_id": "m-1"})
        r.hset(keys.signal_ice(sid), "c", "{}")
        r.zadd(keys.signals_alive, {sid: seen})

    def sweep(since: str, limit: int) -> object:
        return change(CLOSE_SILENT, [keys.signals_alive], [since, limit, keys.signal(""), suffix, "100.0", 600])

    # s-2 was closed already: it leaves the zset without being closed again.
    assert sweep("25", 10) == {"closed": [{"session_id": "s-1", "meeting_id": "m-1", "user_id": "u-s-1"}]}
    assert r.hmget(keys.signal("s-1"), "state", "closed_at", "reason") == [b"closed", b"100.0", b"timeout"]
    assert 0 < r.ttl(keys.signal("s-1")) <= 600 and 0 < r.ttl(keys.signal_ice("s-1")) <= 600
    assert r.ttl(keys.signal("s-2")) == -1
    assert r.zrange(keys.signals_alive, 0, -1) == [b"s-3", b"s-4"]
    assert sweep("95", 1) == {"closed": [{"session_id": "s-3", "meeting_id": "m-1", "user_id": "u-s-3"}]}
    assert r.zrange(keys.signals_alive, 0, -1) == [b"s-4"] and r.hget(keys.signal("s-4"), "state") == b"open"
    assert sweep("95", 10) == {"closed": [{"session_id": "s-4", "meeting_id": "m-1", "user_id": "u-s-4"}]}
