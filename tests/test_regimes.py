"""The planner against every API regime: FOUR_HOUR served or not, pages of 350 or 300.

Each regime is an emulator (``emulator_regime``) the client knows nothing about
beforehand: it learns the regime from the answers, at the cost of at most two
400s, remembers it in Redis, and fills Redis with exactly the API's candles.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from test_backfill import (
    SYMBOLS,
    assert_redis_is_the_apis,
    assert_same_candles,
    emulator_candles,
    four_hour_truth,
    planned,
    state_prefix,
    stored,
)
from test_backfill import config as backfill_config

from livermore_nb import BackfillConfig, backfill
from livermore_nb.emulator import Emulator
from livermore_nb.memory import Capabilities
from livermore_nb.plan import count_pages, fetch_span, plan, planned_requests, target_window
from livermore_nb.store import SeriesInfo
from livermore_nb.timeframes import TIMEFRAMES, parse_timeframes

H = 3600
REGIMES = [(True, 350), (True, 300), (False, 350), (False, 300)]
IDS = ["four-hour-350", "four-hour-300", "no-four-hour-350", "no-four-hour-300"]
NOW = (time.time() // (4 * H) - 2) * 4 * H + 2.5 * H
"""A past moment 2.5 h into a 4h bucket, where the newest closed 2h bucket is past the 4h one."""
LIQUID = ("SOL-USD", "ADA-USD", "AVAX-USD")
"""Synthetic products with 2000 days of history and no empty bucket: no paging back."""
EMPTY = SeriesInfo(0, None, None)


def config(redis_url: str, key_template: str, **overrides: Any) -> BackfillConfig:
    """test_backfill's config for one process alone: a rerun fetches, not reads a peer's work."""
    return backfill_config(redis_url, key_template, **{"shared_rate": "off", **overrides})


def regime(emu: Emulator) -> Capabilities:
    """The capabilities the emulator really has."""
    return Capabilities(four_hour=emu.config.four_hour, max_buckets=emu.config.max_buckets)


@pytest.mark.parametrize("emulator_regime", REGIMES, indirect=True, ids=IDS)
async def test_every_regime_fills_redis_with_the_apis_candles(
    emulator_regime: Emulator, regime_env, redis_url, key_template, sync_redis
):
    report = await backfill(config(redis_url, key_template), env=regime_env, clock=lambda: NOW)
    not_ready = {(s.symbol, s.timeframe) for s in report.series if s.status != "ready"}
    assert not_ready == {("BTC-USD", "1d"), ("XTZ-USD", "1d")}  # ~32 and ~89 days recorded
    assert_redis_is_the_apis(emulator_regime, sync_redis, key_template, SYMBOLS, NOW)
    real = regime(emulator_regime)
    assert report.api["four_hour"] == real.four_hour
    assert report.api["max_buckets"] in (real.max_buckets, None)  # None: no page needed > 300
    refused = emulator_regime.stats.by_status.get(400, 0)
    assert refused == (not real.four_hour) + (report.api["max_buckets"] == 300) <= 2


@pytest.mark.parametrize("emulator_regime", REGIMES, indirect=True, ids=IDS)
async def test_requests_are_the_planners_count_plus_the_capability_400s(
    emulator_regime: Emulator, regime_env, redis_url, key_template, sync_redis
):
    cfg = config(redis_url, key_template, symbols=LIQUID, full=True)
    events: list[dict] = []
    report = await backfill(cfg, env=regime_env, clock=lambda: NOW, on_event=events.append)
    assert report.ready
    refused = emulator_regime.stats.by_status.get(400, 0)
    assert report.requests == emulator_regime.stats.total == planned(events) + refused
    real = regime(emulator_regime)
    tfs = parse_timeframes(cfg.timeframes)
    best = plan(
        LIQUID, tfs, lambda _, tf: target_window(tf, EMPTY, NOW, cfg), NOW, real,
        page_buckets=real.page_buckets(None),
    )  # fmt: skip
    assert planned(events) == planned_requests(best, real.page_buckets(None))
    h1 = TIMEFRAMES["1h"]
    hourly = [target_window(TIMEFRAMES[n], EMPTY, NOW, cfg) for n in ("1h", "4h")]
    old_plan = len(LIQUID) * (4 + count_pages(h1, fetch_span(h1, hourly, NOW), 300))  # type: ignore[arg-type]
    assert planned(events) < old_plan  # 4h rode on 1h in pages of 300: 5 hourly pages here

    # the next run remembers the regime: not one 400, exactly the plan
    before = emulator_regime.stats.total
    events.clear()
    again = await backfill(cfg, env=regime_env, clock=lambda: NOW, on_event=events.append)
    assert emulator_regime.stats.by_status.get(400, 0) == refused
    assert again.requests == emulator_regime.stats.total - before == planned(events)
    assert again.api == report.api
    api_key = f"{state_prefix(key_template)}:api:{emulator_regime.url.split('//')[1]}"
    assert 0 < sync_redis.ttl(api_key) <= cfg.api_ttl


@pytest.mark.parametrize("emulator_regime", [(False, 350)], indirect=True, ids=["no-four-hour"])
async def test_4h_from_2h_equals_4h_from_1h(
    emulator_regime: Emulator, regime_env, redis_url, key_template, sync_redis
):
    symbols = ("SOL-USD", "ICP-USD", "XTZ-USD")
    cfg = config(redis_url, key_template, symbols=symbols, timeframes="4h")
    await backfill(cfg, env=regime_env, clock=lambda: NOW)
    assert emulator_regime.stats.by_series.keys() >= {("SOL-USD", "TWO_HOUR")}
    assert ("SOL-USD", "ONE_HOUR") not in emulator_regime.stats.by_series
    # the truth aggregates the emulator's 1h candles by hand (test_backfill.four_hour_truth)
    h4 = TIMEFRAMES["4h"]
    end = h4.floor(NOW)
    for symbol in cfg.symbols:
        got = stored(sync_redis, key_template, symbol, "4h")
        hourly = emulator_candles(
            emulator_regime, symbol, TIMEFRAMES["1h"], end - 400 * h4.seconds, end
        )
        assert_same_candles(got, four_hour_truth(hourly, got[0]["timestamp"], end * 1000))


async def test_a_recorded_history_start_spares_every_later_probe(
    emulator: Emulator, key_env, redis_url, key_template, sync_redis: redis.Redis
):
    cfg = config(redis_url, key_template, symbols=("BTC-USD",))  # ~32 days recorded, then none
    events: list[dict] = []
    report = await backfill(cfg, env=key_env, clock=lambda: NOW, on_event=events.append)
    by_series = dict(emulator.stats.by_series)
    # one probe, at 1d: an empty page of days before the oldest candle; every other series
    # of the symbol is then bounded by it and sends exactly its planned pages
    assert by_series.pop(("BTC-USD", "ONE_DAY")) == 2
    assert all(n == 1 for n in by_series.values()), by_series
    assert report.requests == planned(events) + 1
    history_key = f"{state_prefix(key_template)}:history:{emulator.url.split('//')[1]}"
    start, proof = map(int, sync_redis.hget(history_key, "BTC-USD").split())
    first = stored(sync_redis, key_template, "BTC-USD", "1d")[0]["timestamp"] // 1000
    assert (start, proof) == (first, 86400)

    # a restart 10 minutes later: the short 1d series holds all there is, nothing to ask
    before = dict(emulator.stats.by_series)
    later = await backfill(cfg, env=key_env, clock=lambda: NOW + 600)
    assert later.ready is False and emulator.stats.by_series[("BTC-USD", "ONE_DAY")] == 2
    assert emulator.stats.total - sum(before.values()) == later.requests

    # even a full refetch sends only planned pages, bounded by the start: no probe (here the
    # 32 days of 1d even ride on the one FOUR_HOUR page 4h needs: 192 buckets since the start)
    events.clear()
    before_total = emulator.stats.total
    full = config(redis_url, key_template, symbols=("BTC-USD",), full=True)
    again = await backfill(full, env=key_env, clock=lambda: NOW, on_event=events.append)
    assert again.requests == emulator.stats.total - before_total == planned(events) == 4
    assert emulator.stats.by_series[("BTC-USD", "ONE_DAY")] == 2


@pytest.mark.parametrize("emulator_regime", [(False, 300)], indirect=True, ids=["older"])
async def test_a_stale_memory_is_corrected_by_the_apis_answers(
    emulator_regime: Emulator, regime_env, redis_url, key_template, sync_redis: redis.Redis
):
    api_key = f"{state_prefix(key_template)}:api:{emulator_regime.url.split('//')[1]}"
    sync_redis.hset(api_key, mapping={"four_hour": 1, "max_buckets": 350})  # remembered wrongly
    symbols = ("SOL-USD", "ICP-USD")
    cfg = config(redis_url, key_template, symbols=symbols)
    report = await backfill(cfg, env=regime_env, clock=lambda: NOW)
    assert report.api == {"four_hour": False, "max_buckets": 300}
    assert report.retries == 0  # a refused page is sent again smaller at once, not retried
    assert_redis_is_the_apis(emulator_regime, sync_redis, key_template, symbols, NOW)
    assert sync_redis.hgetall(api_key) == {b"four_hour": b"0", b"max_buckets": b"300"}


async def test_page_size_forces_smaller_pages(
    emulator: Emulator, key_env, redis_url, key_template, sync_redis: redis.Redis
):
    cfg = config(redis_url, key_template, symbols=("SOL-USD",), timeframes="1h", page_size=120)
    events: list[dict] = []
    report = await backfill(cfg, env=key_env, clock=lambda: NOW, on_event=events.append)
    assert report.ready and len(stored(sync_redis, key_template, "SOL-USD", "1h")) == 300
    assert report.requests == planned(events) == 3  # 120 + 120 + 60 hours
    assert emulator.stats.by_status.get(400, 0) == 0
