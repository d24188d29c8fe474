"""The signaling service's state: sessions (``Keys.signal``) with their offer, answer and state (``open``,
``offered``, ``connected``, ``closed``), their ICE candidates (``Keys.signal_ice``), and the open sessions
scored by their last sign of life (``Keys.signals_alive``), which the beat job sweeps.

Every change is a once-script (:mod:`meetingtasks.services.operation`). A closed session's keys expire
after ``domain_retention_s``.
"""

from __future__ import annotations

from typing import Any

from meetingtasks.services.operation import Operation, once_script
from meetingtasks.services.settings import meeting_settings
from meetingtasks.services.user.store import as_list
from meetingtasks.store.platform import Platform

SERVICE = "signaling"

_OPEN = once_script("signaling_open")
_HEARTBEAT = once_script("signaling_heartbeat")
_CLOSE = once_script("signaling_close")
_OFFER = once_script("signaling_offer")
_ANSWER = once_script("signaling_answer")
_ICE = once_script("signaling_ice")
_CLOSE_SILENT = once_script("signaling_close_silent")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SignalingStore:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.keys = platform.keys
        self.redis = platform.redis(SERVICE)

    def _keys(self, session_id: str) -> list[str]:
        return [self.keys.signal(session_id), self.keys.signal_ice(session_id), self.keys.signals_alive]

    def _session_keys(self, session_id: str) -> list[str]:
        """The keys of the changes that leave the session's candidates alone."""
        return [self.keys.signal(session_id), self.keys.signals_alive]

    def open(self, op: Operation, session_id: str, user_id: str, meeting_id: str | None, now: float) -> dict[str, Any]:
        out: dict[str, Any] = op.mutate(_OPEN, "open", self._keys(session_id),
                                        [session_id, user_id, meeting_id or "", repr(now)])
        return out

    def heartbeat(self, op: Operation, session_id: str, user_id: str, now: float) -> dict[str, Any]:
        out: dict[str, Any] = op.mutate(_HEARTBEAT, "heartbeat", self._session_keys(session_id),
                                        [session_id, user_id, repr(now)])
        return out

    def close(self, op: Operation, session_id: str, user_id: str, reason: str, now: float) -> dict[str, Any]:
        out: dict[str, Any] = op.mutate(_CLOSE, "close", self._keys(session_id),
                                        [session_id, user_id, reason, repr(now),
                                         meeting_settings(self.platform).domain_retention_s])
        return out

    def offer(self, op: Operation, session_id: str, from_user: str, to_user: str, sdp: str,
              meeting_id: str | None, now: float) -> dict[str, Any]:
        out: dict[str, Any] = op.mutate(_OFFER, "offer", self._session_keys(session_id),
                                        [session_id, from_user, to_user, sdp, meeting_id or "", repr(now)])
        return out

    def answer(self, op: Operation, session_id: str, from_user: str, to_user: str, sdp: str,
               now: float) -> dict[str, Any]:
        out: dict[str, Any] = op.mutate(_ANSWER, "answer", self._session_keys(session_id),
                                        [session_id, from_user, to_user, sdp, repr(now)])
        return out

    def add_candidate(self, op: Operation, session_id: str, from_user: str, candidate: str, entry: str,
                      now: float) -> dict[str, Any]:
        out: dict[str, Any] = op.mutate(_ICE, "ice", self._keys(session_id),
                                        [session_id, from_user, candidate, entry, repr(now)])
        return out

    def close_silent(self, op: Operation, *, silent_since: float, limit: int, now: float) -> list[dict[str, Any]]:
        out = op.mutate(_CLOSE_SILENT, "close-silent", [self.keys.signals_alive],
                        [repr(silent_since), limit, self.keys.signal(""), self._ice_suffix(), repr(now),
                         meeting_settings(self.platform).domain_retention_s])
        return as_list(out.get("closed"))

    def _ice_suffix(self) -> str:
        """What ``Keys.signal_ice`` appends to ``Keys.signal``, for the sweep script that builds both."""
        return self.keys.signal_ice("x")[len(self.keys.signal("x")):]

    def session(self, session_id: str) -> dict[str, str]:
        return {_text(k): _text(v) for k, v in self.redis.hgetall(self.keys.signal(session_id)).items()}

    def candidates(self, session_id: str) -> dict[str, str]:
        return {_text(k): _text(v) for k, v in self.redis.hgetall(self.keys.signal_ice(session_id)).items()}
