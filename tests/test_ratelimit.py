"""The pacer on a controlled clock: spacing, window bound, shared cool-down, FIFO."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from livermore_nb.errors import ConfigError, RateLimited, ServerError
from livermore_nb.ratelimit import Pacer, RequestStats, RetryPolicy, on_rate_limited, retrying

T = TypeVar("T")


class FakeClock:
    """Virtual time: sleepers wake in deadline order, time jumps to the next deadline.

    ``drive(coro)`` runs ``coro`` while advancing time whenever every task is asleep.
    """

    def __init__(self) -> None:
        self.now = 1000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._seq), future))
        await future

    async def drive(self, coro: Awaitable[T]) -> T:
        task = asyncio.ensure_future(coro)
        while not task.done():
            for _ in range(20):  # let every runnable task reach its next sleep
                await asyncio.sleep(0)
            if self._sleepers:
                deadline, _, future = heapq.heappop(self._sleepers)
                self.now = max(self.now, deadline)
                future.set_result(None)
        return task.result()


def max_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def grant_times(pacer: Pacer, clock: FakeClock, n: int, workers: int) -> list[float]:
    granted: list[float] = []

    async def worker(count: int) -> None:
        for _ in range(count):
            await pacer.acquire()
            granted.append(clock())

    await clock.drive(asyncio.gather(*(worker(n // workers) for _ in range(workers))))
    return granted


@pytest.mark.parametrize(("rate", "workers"), [(25, 8), (8, 3), (30, 16), (12, 2)])
async def test_pacer_never_exceeds_rate_in_any_second(rate: float, workers: int) -> None:
    clock = FakeClock()
    pacer = Pacer(rate, clock=clock, sleep=clock.sleep)
    granted = await grant_times(pacer, clock, 240, workers)
    assert len(granted) == 240
    assert max_in_window(granted) <= int(rate)
    # no initial burst: evenly spaced from the first grant, so N grants take (N-1)/rate
    assert granted[-1] - granted[0] == pytest.approx((240 - 1) / rate, rel=1e-6)


async def test_cool_down_pauses_every_worker() -> None:
    clock = FakeClock()
    pacer = Pacer(10, clock=clock, sleep=clock.sleep)
    await clock.drive(pacer.acquire())
    paused_at = clock()
    pacer.cool_down(3.0)
    granted = await grant_times(pacer, clock, 10, 5)
    assert min(granted) >= paused_at + 3.0


async def test_slots_are_granted_in_call_order() -> None:
    clock = FakeClock()
    pacer = Pacer(5, clock=clock, sleep=clock.sleep)
    order: list[int] = []

    async def take(i: int) -> None:
        await pacer.acquire()
        order.append(i)

    await clock.drive(asyncio.gather(*(take(i) for i in range(12))))
    assert order == list(range(12))


async def test_fractional_rate_rounds_the_window_down() -> None:
    clock = FakeClock()
    pacer = Pacer(2.5, clock=clock, sleep=clock.sleep)
    granted = await grant_times(pacer, clock, 20, 2)
    assert max_in_window(granted) == 2


def test_rate_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        Pacer(0)


async def test_retrying_retries_only_retryable_errors_and_counts() -> None:
    stats = RequestStats()
    policy = RetryPolicy(attempts=3, backoff_initial_s=0.001, backoff_max_s=0.002, jitter_s=0)
    calls = 0
    with pytest.raises(ServerError):
        async for attempt in retrying(policy, stats):
            with attempt:
                calls += 1
                raise ServerError(503, "busy")
    assert (calls, stats.retries) == (3, 2)

    calls = 0
    with pytest.raises(ConfigError):
        async for attempt in retrying(policy, stats):
            with attempt:
                calls += 1
                raise ConfigError("not retryable")
    assert calls == 1


def test_rate_limited_honours_retry_after() -> None:
    clock = FakeClock()
    pacer = Pacer(10, clock=clock, sleep=clock.sleep)
    stats = RequestStats()
    on_rate_limited(RateLimited(429, "slow down", retry_after=4.0), pacer, RetryPolicy(), stats)
    assert stats.rate_limited == 1
    assert pacer._paused_until == pytest.approx(clock() + 4.0)
    on_rate_limited(RateLimited(429, "slow down"), pacer, RetryPolicy(cool_down_s=9), stats)
    assert pacer._paused_until == pytest.approx(clock() + 9.0)


async def test_no_catch_up_burst_after_the_event_loop_stalls() -> None:
    clock = FakeClock()
    pacer = Pacer(20, clock=clock, sleep=clock.sleep)
    granted: list[float] = []

    async def worker() -> None:
        for _ in range(6):
            await pacer.acquire()
            granted.append(clock())
            if len(granted) == 3:
                clock.now += 2.0  # this worker blocks the loop while the others wait

    await clock.drive(asyncio.gather(*(worker() for _ in range(5))))
    gaps = [b - a for a, b in itertools.pairwise(sorted(granted))]
    assert len(granted) == 30
    assert min(gaps) >= 1 / 20 - 1e-9
