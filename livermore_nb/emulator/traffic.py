"""What happens to each request before it is answered: rate windows, statistics, faults."""

from __future__ import annotations

import random
from collections import defaultdict, deque
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .config import EmulatorConfig

FaultKind = Literal["error", "timeout", "malformed"]
SERVER_ERRORS: tuple[int, ...] = (500, 502, 503)
MALFORMED_KINDS: tuple[str, ...] = ("truncated", "shape", "value")


class SlidingWindow:
    """Event times of the last second, per identity (a key name, an IP, or ``*``)."""

    def __init__(self) -> None:
        self._events: defaultdict[str, deque[float]] = defaultdict(deque)

    def add(self, who: str, now: float) -> int:
        """Record an event at ``now``; return the count of ``who``'s events in ``(now-1, now]``."""
        events = self._events[who]
        events.append(now)
        while events[0] <= now - 1:
            events.popleft()
        return len(events)

    def clear(self) -> None:
        """Forget every event."""
        self._events.clear()


@dataclass
class EmulatorStats:
    """Counts of candle requests (admin ``/_emulator`` calls are not counted)."""

    total: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    by_endpoint: dict[str, int] = field(default_factory=dict)
    """``private`` / ``public``."""
    by_series: dict[tuple[str, str], int] = field(default_factory=dict)
    """(product, granularity) → requests."""
    by_client: dict[str, int] = field(default_factory=dict)
    """Key name (private, authenticated) or client IP → requests."""
    by_fault: dict[str, int] = field(default_factory=dict)
    peak_1s: int = 0
    """Most requests that arrived within any one second."""
    peak_1s_by_client: dict[str, int] = field(default_factory=dict)
    timestamps: list[float] = field(default_factory=list)
    """Arrival time of each request (the emulator's clock)."""

    @property
    def rate_limited(self) -> int:
        """Requests answered 429."""
        return self.by_status.get(429, 0)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (tuple and int keys become strings)."""
        out = asdict(self)
        out["by_status"] = {str(k): v for k, v in self.by_status.items()}
        out["by_series"] = {f"{p}:{g}": n for (p, g), n in self.by_series.items()}
        out["rate_limited"] = self.rate_limited
        return out


def bump(counts: dict[Any, int], key: Any) -> None:
    """Add one to ``counts[key]``."""
    counts[key] = counts.get(key, 0) + 1


class Recorder:
    """Fills an EmulatorStats as requests arrive and are answered."""

    def __init__(self) -> None:
        self.stats = EmulatorStats()
        self._window = SlidingWindow()

    def arrival(self, *, endpoint: str, client: str, series: tuple[str, str], now: float) -> None:
        """Count one request and update the 1-second peaks."""
        s = self.stats
        s.total += 1
        s.timestamps.append(now)
        bump(s.by_endpoint, endpoint)
        bump(s.by_series, series)
        bump(s.by_client, client)
        s.peak_1s = max(s.peak_1s, self._window.add("*", now))
        peak = self._window.add(client, now)
        s.peak_1s_by_client[client] = max(s.peak_1s_by_client.get(client, 0), peak)

    def answered(self, status: int) -> None:
        """Count a response status."""
        bump(self.stats.by_status, status)

    def fault(self, kind: str) -> None:
        """Count an injected fault."""
        bump(self.stats.by_fault, kind)

    def reset(self) -> None:
        """Start counting from zero."""
        self.stats = EmulatorStats()
        self._window.clear()


class RateLimiter:
    """Sliding 1-second limit per identity; rejected requests count toward the window too.

    Counting rejections (as the real API appears to) means a client that keeps
    hammering stays locked out; one that honours ``Retry-After`` gets back in.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._window = SlidingWindow()

    def allow(self, who: str, now: float) -> bool:
        """Record a request by ``who`` at ``now``; False when it is over the limit."""
        count = self._window.add(who, now)
        return not self.limit or count <= self.limit

    def clear(self) -> None:
        """Forget every request."""
        self._window.clear()


@dataclass(frozen=True)
class Fault:
    """What to do to one request: a delay, then maybe an error, a stall or a bad body."""

    delay_s: float
    kind: FaultKind | None
    status: int
    """The 5xx status when ``kind == "error"``."""
    malformed: str
    """``truncated``, ``shape`` or ``value`` when ``kind == "malformed"``."""


class FaultPlan:
    """Draws a Fault per request from a seeded RNG: same seed, same request order → same faults.

    Every draw consumes the same number of random numbers, so the n-th request's
    fault depends only on the seed and n. Kinds are exclusive and checked in the
    order error, timeout, malformed (if the rates sum past 1, later kinds shrink).
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)

    def draw(self) -> Fault:
        """The fault for the next request."""
        cfg, rng = self.config, self._rng
        delay_ms = cfg.latency_ms + rng.uniform(0, cfg.latency_jitter_ms)
        u = rng.random()
        status = rng.choice(SERVER_ERRORS)
        malformed = rng.choice(MALFORMED_KINDS)
        kind: FaultKind | None = None
        if u < cfg.error_rate:
            kind = "error"
        elif u < cfg.error_rate + cfg.timeout_rate:
            kind = "timeout"
        elif u < cfg.error_rate + cfg.timeout_rate + cfg.malformed_rate:
            kind = "malformed"
        return Fault(delay_ms / 1000, kind, status, malformed)
