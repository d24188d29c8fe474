"""Task types of the signaling service: WebRTC negotiation relayed between peers, and session liveness.

============================  ========  ==================================================================
type                          priority  job
============================  ========  ==================================================================
signaling_webrtc_offer        critical  validate the offer SDP, keep it on the session (opening it if
                                        needed), relay it -> ``webrtc.offer``; refused: invalid SDP,
                                        closed session
signaling_webrtc_answer       critical  validate the answer, check it answers the session's offer, relay
                                        it -> ``webrtc.answer``, ``webrtc.connected``; refused: invalid
                                        SDP, no offer, unknown or closed session, wrong peers
signaling_ice_candidate       critical  validate the candidate, keep it once, relay it ->
                                        ``webrtc.ice_candidate``; refused: invalid candidate, unknown or
                                        closed session, sender not a party of it
signaling_connection_manage   high      ``open`` a participant's session, ``heartbeat`` it, ``close`` it ->
                                        ``webrtc.disconnected`` (reason closed); refused: heartbeat or
                                        close of an unknown session, heartbeat of a closed one
signaling_stale_close         high      beat job: close sessions silent for
                                        ``signaling_heartbeat_timeout_s`` -> ``webrtc.disconnected``
                                        (reason timeout, so the meeting service removes the participant)
============================  ========  ==================================================================

Relaying is publishing on ``signaling_events``: the peer's edge (its WebSocket or SFU connection) listens
on that channel for events addressed ``to_user``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from meetingtasks.core.errors import PermanentError
from meetingtasks.core.priority import Priority
from meetingtasks.core.registry import task_type
from meetingtasks.services.operation import Operation, run_once
from meetingtasks.services.settings import meeting_settings
from meetingtasks.services.signaling.schemas import (
    SignalingConnectionManage,
    SignalingIceCandidate,
    SignalingStaleClose,
    SignalingWebRTCAnswer,
    SignalingWebRTCOffer,
)
from meetingtasks.services.signaling.sdp import validate_candidate, validate_sdp
from meetingtasks.services.signaling.store import SERVICE, SignalingStore
from meetingtasks.store.platform import get_platform

CHANNEL = "signaling_events"
_REFUSALS = {
    "unknown": "no signaling session {s!r}",
    "closed": "signaling session {s!r} is closed",
    "no_offer": "signaling session {s!r} has no pending offer to answer",
    "mismatch": "this answer does not answer the offer of session {s!r} (from/to users do not match it)",
    "not_party": "the sender is not a party of signaling session {s!r}",
}


def store() -> SignalingStore:
    return SignalingStore(get_platform())


def refuse_if(outcome: dict[str, Any], session_id: str) -> None:
    refused = outcome.get("refused")
    if refused:
        raise PermanentError(_REFUSALS.get(refused, "signaling session {s!r}: " + str(refused)).format(s=session_id))


@task_type(SERVICE, "signaling_webrtc_offer", payload=SignalingWebRTCOffer, priority=Priority.CRITICAL,
           client=True, subject_field="from_user")
def signaling_webrtc_offer(p: SignalingWebRTCOffer) -> dict[str, Any]:
    media = validate_sdp(p.sdp, "offer")

    def body(op: Operation) -> dict[str, Any]:
        outcome = store().offer(op, p.session_id, p.from_user, p.to_user, p.sdp, p.meeting_id, time.time())
        refuse_if(outcome, p.session_id)
        meeting_id = outcome.get("meeting_id") or p.meeting_id
        op.emit(CHANNEL, "webrtc.offer", {"session_id": p.session_id, "from_user": p.from_user, "to_user": p.to_user,
                                          "sdp": p.sdp, "meeting_id": meeting_id})
        return {"session_id": p.session_id, "state": "offered", "media": media}

    result: dict[str, Any] = run_once(SERVICE, body)
    return result


@task_type(SERVICE, "signaling_webrtc_answer", payload=SignalingWebRTCAnswer, priority=Priority.CRITICAL,
           client=True, subject_field="from_user")
def signaling_webrtc_answer(p: SignalingWebRTCAnswer) -> dict[str, Any]:
    media = validate_sdp(p.sdp, "answer")

    def body(op: Operation) -> dict[str, Any]:
        outcome = store().answer(op, p.session_id, p.from_user, p.to_user, p.sdp, time.time())
        refuse_if(outcome, p.session_id)
        meeting_id = outcome.get("meeting_id") or p.meeting_id
        op.emit(CHANNEL, "webrtc.answer", {"session_id": p.session_id, "from_user": p.from_user,
                                           "to_user": p.to_user, "sdp": p.sdp, "meeting_id": meeting_id})
        op.emit(CHANNEL, "webrtc.connected", {"session_id": p.session_id, "meeting_id": meeting_id,
                                              "user_id": outcome["offer_from"], "peer": p.from_user})
        return {"session_id": p.session_id, "state": "connected", "media": media}

    result: dict[str, Any] = run_once(SERVICE, body)
    return result


@task_type(SERVICE, "signaling_ice_candidate", payload=SignalingIceCandidate, priority=Priority.CRITICAL,
           client=True, subject_field="from_user")
def signaling_ice_candidate(p: SignalingIceCandidate) -> dict[str, Any]:
    parsed = validate_candidate(p.candidate)

    def body(op: Operation) -> dict[str, Any]:
        entry = orjson.dumps({"from_user": p.from_user, "sdp_mid": p.sdp_mid, "sdp_mline_index": p.sdp_mline_index,
                              "added_at": time.time()}).decode()
        outcome = store().add_candidate(op, p.session_id, p.from_user, p.candidate, entry, time.time())
        refuse_if(outcome, p.session_id)
        if outcome.get("duplicate"):
            return {"session_id": p.session_id, "duplicate": True}
        op.emit(CHANNEL, "webrtc.ice_candidate",
                {"session_id": p.session_id, "from_user": p.from_user, "to_user": p.to_user,
                 "candidate": p.candidate, "sdp_mid": p.sdp_mid, "sdp_mline_index": p.sdp_mline_index,
                 "meeting_id": outcome.get("meeting_id") or None})
        return {"session_id": p.session_id, "type": parsed.type, "transport": parsed.transport}

    result: dict[str, Any] = run_once(SERVICE, body)
    return result


@task_type(SERVICE, "signaling_connection_manage", payload=SignalingConnectionManage, priority=Priority.HIGH,
           client=True, subject_field="user_id")
def signaling_connection_manage(p: SignalingConnectionManage) -> dict[str, Any]:
    def body(op: Operation) -> dict[str, Any]:
        sessions = store()
        now = time.time()
        if p.action == "open":
            outcome = sessions.open(op, p.session_id, p.user_id, p.meeting_id, now)
            return {"session_id": p.session_id, "action": "open", "state": outcome.get("state", "open"),
                    "already_open": bool(outcome.get("already"))}
        if p.action == "heartbeat":
            outcome = sessions.heartbeat(op, p.session_id, p.user_id, now)
            refuse_if(outcome, p.session_id)
            return {"session_id": p.session_id, "action": "heartbeat", "state": outcome["state"]}
        outcome = sessions.close(op, p.session_id, p.user_id, "closed", now)
        refuse_if(outcome, p.session_id)
        if outcome.get("already"):
            return {"session_id": p.session_id, "action": "close", "already_closed": True}
        op.emit(CHANNEL, "webrtc.disconnected",
                {"session_id": p.session_id, "meeting_id": outcome.get("meeting_id") or p.meeting_id,
                 "user_id": outcome.get("user_id") or p.user_id, "reason": "closed"})
        return {"session_id": p.session_id, "action": "close", "state": "closed"}

    result: dict[str, Any] = run_once(SERVICE, body)
    return result


@task_type(SERVICE, "signaling_stale_close", payload=SignalingStaleClose, priority=Priority.HIGH, timeout=120)
def signaling_stale_close(p: SignalingStaleClose) -> dict[str, Any]:
    def body(op: Operation) -> dict[str, Any]:
        now = time.time()
        timeout_s = meeting_settings(op.platform).signaling_heartbeat_timeout_s
        closed = store().close_silent(op, silent_since=now - timeout_s, limit=p.limit, now=now)
        for session in closed:
            op.emit(CHANNEL, "webrtc.disconnected",
                    {"session_id": session["session_id"], "meeting_id": session.get("meeting_id") or None,
                     "user_id": session.get("user_id") or None, "reason": "timeout", "silent_s": timeout_s},
                    discriminator=str(session["session_id"]))
        return {"closed": [s["session_id"] for s in closed]}

    result: dict[str, Any] = run_once(SERVICE, body)
    return result
