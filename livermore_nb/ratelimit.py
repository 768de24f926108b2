"""The shared pacer, the 429 cool-down and the retry policy.

Every request from every worker passes through one :class:`Pacer`, which hands
out evenly spaced send slots (no initial burst) and never more than ``rate``
slots in any one-second window. A 429 calls :meth:`Pacer.cool_down`, which
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
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from .errors import ConfigError, RateLimited

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

WINDOW_S = 1.0


class Pacer:
    """Evenly spaced request slots at ``rate`` per second, shared by all workers."""

    def __init__(self, rate: float, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep):
        if not rate > 0:
            raise ConfigError(f"rate must be > 0 requests/s, got {rate}")
        self.rate = rate
        self._interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next_slot = -math.inf
        self._paused_until = -math.inf
        self._reserved: deque[float] = deque(maxlen=max(1, math.floor(rate)))

    async def acquire(self) -> None:
        """Wait for this caller's slot; slots are reserved in call order."""
        while True:
            now = self._clock()
            slot = max(now, self._next_slot, self._paused_until, self._window_opens())
            self._next_slot = slot + self._interval
            self._reserved.append(slot)
            if slot > now:
                await self._sleep(slot - now)
            if self._clock() >= self._paused_until:
                return
            # a 429 started a cool-down while this caller slept: take a slot after it

    def cool_down(self, seconds: float) -> None:
        """Pause every worker for ``seconds`` from now (a 429 was answered)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def _window_opens(self) -> float:
        """Earliest slot that keeps any one-second window at ``rate`` slots or fewer."""
        if len(self._reserved) < (self._reserved.maxlen or 1):
            return -math.inf
        return self._reserved[0] + WINDOW_S


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

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError("retry attempts must be at least 1")


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
        stop=stop_after_attempt(policy.attempts),
        wait=wait_exponential_jitter(
            multiplier=policy.backoff_initial_s, max=policy.backoff_max_s, jitter=policy.jitter_s
        ),
        retry=retry_if_exception(lambda exc: getattr(exc, "retryable", False)),
        before_sleep=count_retry,
        reraise=True,
    )


def on_rate_limited(
    exc: RateLimited, pacer: Pacer, policy: RetryPolicy, stats: RequestStats
) -> None:
    """Start the shared cool-down for a 429, honouring Retry-After."""
    stats.rate_limited += 1
    pacer.cool_down(exc.retry_after if exc.retry_after is not None else policy.cool_down_s)
