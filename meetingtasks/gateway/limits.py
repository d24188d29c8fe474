"""The gateway's counters and the per-client frame budget."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class GatewayCounters:
    """Session counters of one gateway process, for metrics (``snapshot()`` is a plain dict)."""

    sessions_open: int = 0
    sessions_opened_total: int = 0
    sessions_closed_total: int = 0
    auth_refused_total: int = 0
    connections_refused_total: int = 0
    submits_denied_total: int = 0
    frames_in_total: int = 0
    frames_out_total: int = 0
    errors_sent_total: int = 0
    submits_total: int = 0
    cancels_total: int = 0
    subscribes_total: int = 0
    rate_limited_total: int = 0
    inflight_refused_total: int = 0
    oversize_frames_total: int = 0
    idle_closed_total: int = 0
    slow_closed_total: int = 0
    pushes_total: int = 0
    tasks_followed: int = 0

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``burst`` saved; each frame takes one. Times in seconds."""

    rate_per_s: float
    burst: float
    tokens: float
    updated_s: float

    @classmethod
    def full(cls, rate_per_s: float, burst: float, now_s: float) -> TokenBucket:
        return cls(rate_per_s, burst, burst, now_s)

    def refilled_by_s(self) -> float:
        """When the bucket is full again if nothing takes from it: from then on, forgetting it loses nothing."""
        return self.updated_s + max(0.0, self.burst - self.tokens) / self.rate_per_s

    def allow(self, now_s: float) -> bool:
        self.tokens = min(self.burst, self.tokens + max(0.0, now_s - self.updated_s) * self.rate_per_s)
        self.updated_s = now_s
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False
