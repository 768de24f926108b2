"""Unit costs of the client's hot path on this machine: where scale's CPU goes.

Each cost is the least CPU time (``time.process_time``) over a few repeats, so a
busy moment does not inflate it. Multiplied by how often the scale workload does
each thing per candle written, they account for the measured CPU per candle and
show how fast this machine is: the same code costs several times more on a slow one.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from livermore_nb.candles import aggregate, dedupe_sorted
from livermore_nb.coinbase import (
    PRIVATE_PATH,
    PUBLIC_PATH,
    CoinbaseClient,
    Credentials,
    Page,
    build_jwt,
    load_credentials,
)
from livermore_nb.memory import Capabilities
from livermore_nb.plan import plan, target_window
from livermore_nb.ratelimit import RequestStats, RetryPolicy, retrying
from livermore_nb.store import CandleStore, SeriesInfo, connect
from livermore_nb.timeframes import DEFAULT_TIMEFRAMES, Timeframe, get_timeframe, parse_timeframes

from .harness import KEY_TEMPLATE, BenchKey, client_env

Row = dict[str, Any]
PRODUCT = "SYN0001-USD"
PAGE = 300
REPEAT = 5
parse_page = CoinbaseClient._parse
"""The client's own page parser: orjson, then validated Candle tuples."""


def best_cpu_us(run: Callable[[], object], per: int, number: int = 50) -> float:
    """Least CPU µs per item of ``run()`` (which handles ``per`` items) over the repeats."""
    best = float("inf")
    for _ in range(REPEAT):
        start = time.process_time()
        for _ in range(number):
            run()
        best = min(best, time.process_time() - start)
    return 1e6 * best / (number * per)


async def best_cpu_us_async(run: Callable[[], Awaitable[object]], number: int = 300) -> float:
    """``best_cpu_us`` for a coroutine function, one item per call."""
    best = float("inf")
    for _ in range(REPEAT):
        start = time.process_time()
        for _ in range(number):
            await run()
        best = min(best, time.process_time() - start)
    return 1e6 * best / number


def page_url(api_url: str, tf: Timeframe, end_s: int) -> str:
    """A full page of ``PRODUCT`` on the public endpoint, ending at ``end_s``."""
    path = PUBLIC_PATH.format(product=PRODUCT)
    start_s = end_s - PAGE * tf.seconds
    return f"{api_url}{path}?start={start_s}&end={end_s}&granularity={tf.granularity}"


def fetch_body(url: str) -> bytes:
    """One response body, fetched outside the measurement."""
    with urllib.request.urlopen(url, timeout=30) as resp:
        return bytes(resp.read())


async def request_cpu_us(url: str) -> float:
    """CPU µs per aiohttp GET of ``url`` (body read), one session, sequential."""
    async with aiohttp.ClientSession() as session:

        async def get() -> None:
            async with session.get(url) as resp:
                await resp.read()

        await best_cpu_us_async(get, 50)  # connection and first-call costs, unmeasured
        return await best_cpu_us_async(get)


async def retry_loop_cpu_us() -> float:
    """CPU µs of tenacity's loop around one successful attempt."""
    policy, stats = RetryPolicy(), RequestStats()

    async def one_attempt() -> int:
        async for attempt in retrying(policy, stats):
            with attempt:
                return 1
        return 0

    return await best_cpu_us_async(one_attempt, 3000)


async def write_cpu_us(redis_url: str, tf: Timeframe, candles: list[Any]) -> float:
    """CPU µs per candle of writing one series (members, redis-py, the Lua call)."""
    store = CandleStore(connect(redis_url), key_template=KEY_TEMPLATE)
    try:
        best = await best_cpu_us_async(lambda: store.write(PRODUCT, tf, candles), 20)
        await store.client.delete(store.key(PRODUCT, tf))
    finally:
        await store.client.aclose()
    return best / len(candles)


@dataclass(frozen=True)
class _Cold:
    """A cold start of ``candles`` per series (what ``plan.Wants`` asks)."""

    candles: int
    include_open: bool = False
    full: bool = True


def per_written(
    candles: int, caps: Capabilities | None = None, now: float | None = None
) -> tuple[float, float]:
    """(API candles parsed, candles aggregated) per candle written in the scale workload.

    From the planner's own tasks for one cold symbol (today's API unless ``caps``).
    """
    caps = caps or Capabilities(four_hour=True, max_buckets=350)
    now = time.time() if now is None else now
    empty, wants = SeriesInfo(0, None, None), _Cold(candles)
    tasks = plan(
        (PRODUCT,), parse_timeframes(DEFAULT_TIMEFRAMES),
        lambda _, tf: target_window(tf, empty, now, wants), now, caps,
        page_buckets=caps.page_buckets(None),
    )  # fmt: skip
    written = candles * sum(len(task.targets) for task in tasks)
    received = sum((t.span[1] - t.span[0]) // t.source.seconds for t in tasks if t.span)
    aggregated = sum((w.end_s - w.start_s) // t.source.seconds
                     for t in tasks for tf, w in t.windows if w and tf != t.source)  # fmt: skip
    return received / written, aggregated / written


async def unit_costs(
    api_url: str, redis_url: str, key: BenchKey, candles: int, requests_per_candle: float
) -> list[Row]:
    """One row per hot-path step: its unit cost and its share of a written candle."""
    five, hour, four = get_timeframe("5m"), get_timeframe("1h"), get_timeframe("4h")
    now = time.time()
    five_end, four_end = five.floor(now), four.floor(now)
    five_url = page_url(api_url, five, five_end)
    five_body, hour_body = fetch_body(five_url), fetch_body(page_url(api_url, hour, four_end))
    page_5m = Page(five_end - PAGE * five.seconds, five_end)
    parsed = parse_page(five_body, five, page_5m)
    hourly = dedupe_sorted(parse_page(hour_body, hour, Page(four_end - PAGE * 3600, four_end)))
    hours_ms = (four_end - PAGE * 3600) * 1000, four_end * 1000
    received, aggregated = per_written(candles)
    credentials = load_credentials(client_env(api_url, key))
    assert isinstance(credentials, Credentials)
    path, host = PRIVATE_PATH.format(product=PRODUCT), urlsplit(api_url).netloc
    steps = [
        ("parse and validate a page (orjson + float)", "received candle",
         best_cpu_us(lambda: parse_page(five_body, five, page_5m), len(parsed)),
         received),
        ("aggregate 1h into 4h", "1h candle",
         best_cpu_us(lambda: aggregate(hourly, four, *hours_ms), len(hourly)),
         aggregated),
        ("write a one-page series (members JSON, redis-py, Lua)", "written candle",
         await write_cpu_us(redis_url, five, dedupe_sorted(parsed)), 1.0),
        ("aiohttp GET and read", "request",
         await request_cpu_us(five_url),
         requests_per_candle),
        ("ES256 JWT", "request",
         best_cpu_us(lambda: build_jwt(credentials, "GET", host, path, now), 1, 500),
         requests_per_candle),
        ("tenacity around one attempt", "request", await retry_loop_cpu_us(),
         requests_per_candle),
    ]  # fmt: skip
    rows = [
        {"step": step, "unit": unit, "µs per unit": round(cost, 3),
         "units per written candle": round(share, 4),
         "µs per written candle": round(cost * share, 2)}
        for step, unit, cost, share in steps
    ]  # fmt: skip
    total = sum(cost * share for _, _, cost, share in steps)
    rows.append({"step": "**sum**", "µs per written candle": round(total, 2)})
    return rows
