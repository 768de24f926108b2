"""The shared pacer, the 429 cool-down and the retry policy.

Every request from every worker passes through one :class:`Pacer`, which grants
turns in call order, at least ``1/rate`` apart in real time (no initial burst,
and no catch-up burst after the event loop stalls) and never more than ``rate``
in any one-second window. A 429 calls :meth:`Pacer.cool_down`, which
pauses *all* workers; the retry itself then waits an exponential backoff with
jitter (tenacity). aiolimiter's leaky bucket would allow a burst of ``rate``
requests up front and has no shared pause, hence this small class.

Example::

    pacer = Pacer(25)
    async with session.get(url) as resp:  # after: await pacer.acquire()
        ...
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from .errors import ConfigError, RateLimited

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

WINDOW_S = 1.0
log = logging.getLogger(__name__)
MAX_COOL_DOWN_S = 60.0
"""Longest shared pause one 429 may start, whatever its Retry-After says."""


class Pacing(Protocol):
    """What the client needs of a pacer: a turn per request, and a pause for everyone."""

    async def acquire(self) -> None:
        """Wait for this caller's turn."""

    def cool_down(self, seconds: float) -> None:
        """Pause every worker for ``seconds`` from now."""


class Pacer:
    """Evenly spaced request slots at ``rate`` per second, shared by all workers."""

    def __init__(self, rate: float, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep):
        if not rate > 0:
            raise ConfigError(f"rate must be > 0 requests/s, got {rate}")
        self.rate = rate
        self._interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._last_grant = -math.inf
        self._paused_until = -math.inf
        self._granted: deque[float] = deque(maxlen=max(1, math.floor(rate)))

    async def acquire(self) -> None:
        """Wait for this caller's turn; callers are served in order, one slot each."""
        async with self._lock:
            while True:
                now = self._clock()
                ready_at = max(
                    self._last_grant + self._interval, self._paused_until, self._window_opens()
                )
                if now >= ready_at:
                    break
                await self._sleep(ready_at - now)
            self._last_grant = now
            self._granted.append(now)

    def cool_down(self, seconds: float) -> None:
        """Pause every worker for ``seconds`` from now (a 429 was answered)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def _window_opens(self) -> float:
        """Earliest grant that keeps any one-second window at ``rate`` grants or fewer."""
        if len(self._granted) < (self._granted.maxlen or 1):
            return -math.inf
        return self._granted[0] + WINDOW_S


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How retryable failures (429, 5xx, timeouts, malformed bodies) are retried."""

    attempts: int = 6
    """Total tries per request, the first included."""
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 8.0
    jitter_s: float = 0.25
    cool_down_s: float = 1.0
    """Shared pause after a 429 that carries no Retry-After."""
    max_cool_down_s: float = MAX_COOL_DOWN_S
    """Longest shared pause one 429 can start, whatever its Retry-After says (3600, ``inf``)."""
    give_up_after_s: float = 120.0
    """A request still failing after this long (its retries and pauses included) gives up."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError("retry attempts must be at least 1")
        for name in ("max_cool_down_s", "give_up_after_s"):
            value = getattr(self, name)
            if not 0 < value < math.inf:
                raise ConfigError(f"retry {name} must be a positive number of seconds, got {value}")

    def cool_down_for(self, retry_after: float | None) -> float:
        """The shared pause for a 429: its Retry-After (or the default), at most the cap."""
        wanted = self.cool_down_s if retry_after is None else retry_after
        return min(wanted, self.max_cool_down_s)


@dataclass
class RequestStats:
    """Counters the report shows: requests sent, retries, 429s."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0


def retrying(policy: RetryPolicy, stats: RequestStats) -> AsyncRetrying:
    """A tenacity loop that retries only errors marked ``retryable``, re-raising the last."""

    def count_retry(state: RetryCallState) -> None:
        stats.retries += 1

    return AsyncRetrying(
        stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.give_up_after_s),
        wait=wait_exponential_jitter(
            multiplier=policy.backoff_initial_s, max=policy.backoff_max_s, jitter=policy.jitter_s
        ),
        retry=retry_if_exception(lambda exc: getattr(exc, "retryable", False)),
        before_sleep=count_retry,
        reraise=True,
    )


def on_rate_limited(
    exc: RateLimited, pacer: Pacing, policy: RetryPolicy, stats: RequestStats
) -> None:
    """Start the shared cool-down for a 429, honouring Retry-After up to the policy's cap."""
    stats.rate_limited += 1
    pause = policy.cool_down_for(exc.retry_after)
    log.warning(
        "rate limited (HTTP %s, Retry-After %s): every worker pauses %.1f s",
        exc.status, exc.retry_after, pause,
    )  # fmt: skip
    pacer.cool_down(pause)
