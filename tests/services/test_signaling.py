"""The signaling service's handlers on a real Redis: SDP and ICE validated and relayed on
``signaling_events``; refusals; redelivered tasks that relay nothing twice; silent sessions closed."""

from __future__ import annotations

import time

import pytest
import redis

from meetingtasks import PermanentError
from meetingtasks.services.settings import meeting_settings
from meetingtasks.services.signaling.sdp import InvalidSignal, validate_candidate, validate_sdp
from meetingtasks.services.signaling.store import SignalingStore
from meetingtasks.store.platform import Platform
from tests.services.conftest import Published, Run


def sdp(setup: str) -> str:
    """A minimal browser-like SDP with one audio section."""
    return "\r\n".join([
        "v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", "a=ice-ufrag:EsAw", "a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1",
        "a=fingerprint:sha-256 " + ":".join(["D2", "FA", "0E", "C3"] * 8),
        f"a=setup:{setup}", "a=mid:0", "a=sendrecv", "a=rtpmap:111 opus/48000/2", "",
    ])


OFFER = {"session_id": "s1", "from_user": "ann", "to_user": "bob", "sdp": sdp("actpass"), "meeting_id": "m1"}
ANSWER = {"session_id": "s1", "from_user": "bob", "to_user": "ann", "sdp": sdp("active")}
CANDIDATE = "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 192.168.1.2 rport 46154"


def test_offer_answer_and_candidates_are_relayed_to_the_peer(run: Run, platform: Platform,
                                                             published: Published) -> None:
    run("signaling_webrtc_offer", OFFER)
    run("signaling_ice_candidate", {"session_id": "s1", "from_user": "ann", "to_user": "bob",
                                    "candidate": CANDIDATE, "sdp_mid": "0", "sdp_mline_index": 0})
    answered = run("signaling_webrtc_answer", ANSWER)

    assert answered == {"session_id": "s1", "state": "connected", "media": ["audio"]}
    session = SignalingStore(platform).session("s1")
    assert session["state"] == "connected" and session["offer"] == OFFER["sdp"] and session["peer"] == "bob"
    assert list(SignalingStore(platform).candidates("s1")) == [CANDIDATE]
    assert published.types("signaling_events") == ["webrtc.offer", "webrtc.ice_candidate", "webrtc.answer",
                                                   "webrtc.connected"]
    offer = published.payloads("signaling_events", "webrtc.offer")[0]
    assert (offer["to_user"], offer["sdp"]) == ("bob", OFFER["sdp"])
    assert published.payloads("signaling_events", "webrtc.connected")[0] == {
        "session_id": "s1", "meeting_id": "m1", "user_id": "ann", "peer": "bob"}


def test_relays_are_published_once_per_task(run: Run, published: Published) -> None:
    first = run("signaling_webrtc_offer", OFFER, task_id="o-1")
    assert run("signaling_webrtc_offer", OFFER, task_id="o-1") == first
    ice = {"session_id": "s1", "from_user": "ann", "to_user": "bob", "candidate": CANDIDATE}
    run("signaling_ice_candidate", ice, task_id="i-1")
    run("signaling_ice_candidate", ice, task_id="i-1")
    assert run("signaling_ice_candidate", ice, task_id="i-2")["duplicate"] is True  # the same candidate again
    answer = run("signaling_webrtc_answer", ANSWER, task_id="a-1")
    assert run("signaling_webrtc_answer", ANSWER, task_id="a-1") == answer
    assert published.types("signaling_events") == ["webrtc.offer", "webrtc.ice_candidate", "webrtc.answer",
                                                   "webrtc.connected"]


@pytest.mark.parametrize("change,error", [
    ({"sdp": "hello"}, "must start with 'v=0'"),
    ({"sdp": sdp("actpass").replace("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "")}, "no media"),
    ({"sdp": sdp("actpass").replace("a=ice-pwd", "a=x-pwd")}, "no 'a=ice-pwd'"),
    ({"sdp": sdp("active")}, "an offer uses actpass"),
])
def test_an_invalid_offer_is_refused_before_anything_is_stored(run: Run, platform: Platform, published: Published,
                                                               change: dict[str, str], error: str) -> None:
    with pytest.raises(InvalidSignal, match=error):
        run("signaling_webrtc_offer", {**OFFER, **change})
    assert SignalingStore(platform).session("s1") == {} and published("signaling_events") == []


def test_answer_refusals(run: Run) -> None:
    with pytest.raises(PermanentError, match="no signaling session 's1'"):
        run("signaling_webrtc_answer", ANSWER)
    run("signaling_webrtc_offer", OFFER)
    with pytest.raises(PermanentError, match="does not answer the offer"):
        run("signaling_webrtc_answer", {**ANSWER, "from_user": "mallory"})
    with pytest.raises(InvalidSignal, match="an answer uses active or passive"):
        run("signaling_webrtc_answer", {**ANSWER, "sdp": sdp("actpass")})
    run("signaling_webrtc_answer", ANSWER)
    with pytest.raises(PermanentError, match="no pending offer"):
        run("signaling_webrtc_answer", ANSWER)


@pytest.mark.parametrize("candidate,error", [
    ("842163049 1 udp 1 1.2.3.4 5 typ host", "must start with 'candidate:'"),
    ("candidate:1 1 sctp 1 1.2.3.4 5 typ host", "transport 'sctp'"),
    ("candidate:1 1 udp 1 1.2.3.4 70000 typ host", "port '70000'"),
    ("candidate:1 1 udp 1 1.2.3.4 5 typ wormhole", "type 'wormhole'"),
    ("candidate:1 1 udp 1 not_an_address! 5 typ host", "neither an IP address nor a hostname"),
])
def test_invalid_candidates_are_refused(candidate: str, error: str) -> None:
    with pytest.raises(InvalidSignal, match=error):
        validate_candidate(candidate)


def test_candidates_need_an_open_session_and_a_party(run: Run) -> None:
    ice = {"session_id": "s1", "from_user": "ann", "to_user": "bob", "candidate": CANDIDATE}
    with pytest.raises(PermanentError, match="no signaling session 's1'"):
        run("signaling_ice_candidate", ice)
    run("signaling_webrtc_offer", OFFER)
    with pytest.raises(PermanentError, match="not a party"):
        run("signaling_ice_candidate", {**ice, "from_user": "mallory"})
    run("signaling_connection_manage", {"session_id": "s1", "user_id": "ann", "action": "close"})
    with pytest.raises(PermanentError, match="signaling session 's1' is closed"):
        run("signaling_ice_candidate", ice)


def test_connection_open_heartbeat_close(run: Run, platform: Platform, r: redis.Redis,
                                         published: Published) -> None:
    manage = {"session_id": "m1:bob", "user_id": "bob", "meeting_id": "m1"}
    opened = run("signaling_connection_manage", {**manage, "action": "open"})
    beat = run("signaling_connection_manage", {**manage, "action": "heartbeat"})
    closed = run("signaling_connection_manage", {**manage, "action": "close"}, task_id="c-1")
    assert run("signaling_connection_manage", {**manage, "action": "close"}, task_id="c-1") == closed
    again = run("signaling_connection_manage", {**manage, "action": "close"})

    assert opened["state"] == "open" and beat["state"] == "open" and closed["state"] == "closed"
    assert again["already_closed"] is True
    assert r.zscore(platform.keys.signals_alive, "m1:bob") is None
    assert published.payloads("signaling_events", "webrtc.disconnected") == [
        {"session_id": "m1:bob", "meeting_id": "m1", "user_id": "bob", "reason": "closed"}]
    with pytest.raises(PermanentError, match="signaling session 'm1:bob' is closed"):
        run("signaling_connection_manage", {**manage, "action": "heartbeat"})
    with pytest.raises(PermanentError, match="no signaling session 'x'"):
        run("signaling_connection_manage", {"session_id": "x", "user_id": "bob", "action": "close"})


def test_silent_sessions_are_closed_by_the_beat_job(run: Run, platform: Platform, r: redis.Redis,
                                                    published: Published) -> None:
    # given two open sessions, one silent for longer than the heartbeat timeout
    for user in ("bob", "cat"):
        run("signaling_connection_manage", {"session_id": f"m1:{user}", "user_id": user, "meeting_id": "m1",
                                            "action": "open"})
    silent_since = time.time() - meeting_settings(platform).signaling_heartbeat_timeout_s - 5
    r.zadd(platform.keys.signals_alive, {"m1:bob": silent_since})

    result = run("signaling_stale_close", {}, task_id="sweep-1")
    assert run("signaling_stale_close", {}, task_id="sweep-1") == result

    assert result == {"closed": ["m1:bob"]}
    store = SignalingStore(platform)
    assert store.session("m1:bob")["reason"] == "timeout" and store.session("m1:cat")["state"] == "open"
    # reason timeout: the meeting service's subscription removes bob from the meeting
    assert [(e["user_id"], e["reason"]) for e in published.payloads("signaling_events", "webrtc.disconnected")] == [
        ("bob", "timeout")]


def test_sdp_validation_returns_the_media() -> None:
    assert validate_sdp(sdp("actpass") + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "offer") == ["audio", "video"]


def test_only_a_party_may_heartbeat_close_or_reoffer_a_session(run: Run, platform: Platform,
                                                              published: Published) -> None:
    # given bob's open session and a connected session between ann and bob
    bob = {"session_id": "m1:bob", "user_id": "bob", "meeting_id": "m1"}
    run("signaling_connection_manage", {**bob, "action": "open"})
    run("signaling_webrtc_offer", OFFER)
    run("signaling_webrtc_answer", ANSWER)
    # when mallory (whom the gateway binds as the acting user) names those sessions, every attempt is refused
    for action in ("heartbeat", "close"):
        with pytest.raises(PermanentError, match="the sender is not a party of signaling session 'm1:bob'"):
            run("signaling_connection_manage", {**bob, "user_id": "mallory", "action": action})
    with pytest.raises(PermanentError, match="the sender is not a party of signaling session 's1'"):
        run("signaling_webrtc_offer", {**OFFER, "from_user": "mallory", "to_user": "ann"})
    # then both sessions are as they were, and nothing was relayed for mallory
    store = SignalingStore(platform)
    assert store.session("m1:bob")["state"] == "open"
    assert (store.session("s1")["state"], store.session("s1")["offer_from"]) == ("connected", "ann")
    assert published.payloads("signaling_events", "webrtc.disconnected") == []
    # and the parties themselves still may: the peer renegotiates, the owner closes
    run("signaling_webrtc_offer", {**OFFER, "from_user": "bob", "to_user": "ann"})
    assert run("signaling_connection_manage", {**bob, "action": "close"})["state"] == "closed"
