"""demo.py: the offline cache the analysis notebooks fill from the emulator (real Redis)."""

from __future__ import annotations

from dataclasses import replace

import redis

from livermore_nb.backfill import BackfillConfig
from livermore_nb.demo import backfill_offline, ensure_offline_cache
from livermore_nb.store import format_key


async def test_ensure_offline_cache_fills_the_missing_series_and_leaves_the_held_ones(
    redis_url: str, key_template: str, sync_redis: redis.Redis
) -> None:
    held = BackfillConfig(symbols=("BTC-USD",), timeframes=("1h",), candles=20, min_candles=20,
                          redis_url=redis_url, key_template=key_template)  # fmt: skip
    assert (await backfill_offline(held)).ready
    key = format_key(key_template, "BTC-USD", "1h")
    sync_redis.persist(key)  # a rewrite would set the TTL again
    members = sync_redis.zrange(key, 0, -1, withscores=True)
    wanted = replace(held, symbols=("BTC-USD", "ETH-USD"), timeframes=("1h", "4h"))
    report = await ensure_offline_cache(wanted)
    assert report is not None and report.ready and report.exit_code == 0
    filled = {(s.symbol, s.timeframe) for s in report.series}
    assert filled == {("BTC-USD", "4h"), ("ETH-USD", "1h"), ("ETH-USD", "4h")}
    assert sync_redis.ttl(key) == -1 and sync_redis.zrange(key, 0, -1, withscores=True) == members
    for symbol, tf in filled:
        assert sync_redis.zcard(format_key(key_template, symbol, tf)) == 20
    assert await ensure_offline_cache(wanted) is None  # every series held: nothing to do


async def test_an_offline_backfill_asks_the_emulator_whatever_api_url_says(
    redis_url: str, key_template: str
) -> None:
    run = BackfillConfig(symbols=("ETH-USD",), timeframes=("1h",), candles=20, min_candles=20,
                         redis_url=redis_url, key_template=key_template,
                         api_url="http://127.0.0.1:1")  # fmt: skip
    assert (await backfill_offline(run)).ready
