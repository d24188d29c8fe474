"""Task types of the signaling service."""

from __future__ import annotations

from typing import Any

from meetingtasks.priority import Priority
from meetingtasks.registry import task_type
from meetingtasks.services.signaling.schemas import (
    SignalingConnectionManage,
    SignalingIceCandidate,
    SignalingWebRTCAnswer,
    SignalingWebRTCOffer,
)


@task_type("signaling", "signaling_webrtc_offer", payload=SignalingWebRTCOffer, priority=Priority.CRITICAL)
def signaling_webrtc_offer(p: SignalingWebRTCOffer) -> dict[str, Any]:
    return {"session_id": p.session_id}


@task_type("signaling", "signaling_webrtc_answer", payload=SignalingWebRTCAnswer, priority=Priority.CRITICAL)
def signaling_webrtc_answer(p: SignalingWebRTCAnswer) -> dict[str, Any]:
    return {"session_id": p.session_id}


@task_type("signaling", "signaling_ice_candidate", payload=SignalingIceCandidate, priority=Priority.CRITICAL)
def signaling_ice_candidate(p: SignalingIceCandidate) -> dict[str, Any]:
    return {"session_id": p.session_id}


@task_type("signaling", "signaling_connection_manage", payload=SignalingConnectionManage, priority=Priority.HIGH)
def signaling_connection_manage(p: SignalingConnectionManage) -> dict[str, Any]:
    return {"session_id": p.session_id, "action": p.action}
