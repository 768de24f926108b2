"""``coverage`` without symbols: every cached series found by SCAN, and ``--check`` for cron."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest
import redis
from test_coverage import T0, hours, put

from livermore_nb.cli import main
from livermore_nb.coverage import cached_series, check_problems, coverage
from livermore_nb.store import DEFAULT_KEY_TEMPLATE, format_key, key_parser, key_pattern

HOUR_MS = 3_600_000


def recent_hours(count: int) -> list[int]:
    """Open times of the ``count`` newest closed 1h candles."""
    last = (int(time.time()) // 3600 - 1) * HOUR_MS
    return [last - i * HOUR_MS for i in reversed(range(count))]


@pytest.mark.cluster
def test_cached_series_finds_every_series_of_the_template(
    sync_redis: redis.Redis, key_template: str
) -> None:
    put(sync_redis, key_template, "ETH-USD", "1d", hours(0))
    put(sync_redis, key_template, "ETH-USD", "5m", hours(0))
    put(sync_redis, key_template, "BTC-USD", "1h", hours(0, 1))
    prefix = key_template.split(":candles:")[0]
    sync_redis.set(f"{prefix}:candles:1:1:notes", "not a series")  # same glob, not a series
    put(sync_redis, f"{prefix}:candles:2:{{exchange_id}}:{{symbol}}:{{timeframe}}", "SOL-USD", "1h",
        hours(0))  # another user  # fmt: skip
    assert cached_series(sync_redis, key_template=key_template) == [
        ("BTC-USD", "1h"),
        ("ETH-USD", "5m"),
        ("ETH-USD", "1d"),
    ]
    assert cached_series(sync_redis, "1d,1h", key_template=key_template) == [
        ("BTC-USD", "1h"),
        ("ETH-USD", "1d"),
    ]
    cov = coverage(sync_redis, key_template=key_template, now=T0 + pd.Timedelta(hours=2))
    assert cov[["symbol", "timeframe", "candles"]].values.tolist() == [
        ["BTC-USD", "1h", 2],
        ["ETH-USD", "5m", 1],
        ["ETH-USD", "1d", 1],
    ]


def test_the_scan_pattern_escapes_glob_characters_and_parses_back() -> None:
    template = "x[1]*?:{exchange_id}:{symbol}:{timeframe}"
    assert key_pattern(template, exchange_id=7) == r"x\[1\]\*\?:7:*:*"
    parse = key_parser(template, exchange_id=7)
    assert parse("x[1]*?:7:BTC-USD:4h") == ("BTC-USD", "4h")
    assert parse("x[1]*?:8:BTC-USD:4h") is None  # another exchange
    assert parse("x[1]*?:7:BTC-USD:3h") is None  # not a timeframe
    assert key_pattern(DEFAULT_KEY_TEMPLATE) == "candles:1:1:*:*"


def test_listing_uses_scan_never_keys(redis_server) -> None:
    client = redis.Redis.from_url(redis_server.url)
    for i in range(30):
        put(client, DEFAULT_KEY_TEMPLATE, f"SYN{i}-USD", "1h", hours(0))
    client.config_resetstat()
    assert len(cached_series(client)) == 30
    stats = client.info("commandstats")
    assert stats["cmdstat_scan"]["calls"] >= 1 and "cmdstat_keys" not in stats
    client.close()


def test_check_names_short_and_stale_series() -> None:
    cov = pd.DataFrame(
        {"symbol": ["A-USD", "B-USD", "C-USD"], "timeframe": ["1h"] * 3,
         "candles": [200, 10, 200], "stale": [False, False, True]}
    )  # fmt: skip
    assert check_problems(cov, 150) == ["B-USD 1h: 10 < 150 candles", "C-USD 1h: stale"]
    assert check_problems(cov, 5) == ["C-USD 1h: stale"]


@pytest.mark.cluster
def test_cli_lists_the_cache_and_check_exits_3_on_a_short_or_stale_series(
    sync_redis: redis.Redis, redis_url: str, key_template: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["coverage", "--redis-url", redis_url, "--key-template", key_template]
    assert main([*base, "--check"]) == 3  # nothing cached is not healthy
    assert "no series cached" in capsys.readouterr().err
    put(sync_redis, key_template, "BTC-USD", "1h", recent_hours(200))
    assert main([*base, "--check"]) == 0
    out, err = capsys.readouterr()
    assert "BTC-USD" in out and "check: ok in 1 series" in err
    put(sync_redis, key_template, "ETH-USD", "1h", recent_hours(20))
    put(sync_redis, key_template, "DOGE-USD", "1h", hours(*range(200)))  # April 2024: stale
    assert main([*base, "--check"]) == 3
    err = capsys.readouterr().err
    assert "ETH-USD 1h: 20 < 150 candles" in err and "DOGE-USD 1h: stale" in err
    assert "BTC-USD" not in err
    assert main([*base, "--check", "--min-candles", "10", "--timeframes", "1h"]) == 3  # still stale
    sync_redis.delete(format_key(key_template, "DOGE-USD", "1h"))
    assert main([*base, "--check", "--min-candles", "10"]) == 0
    capsys.readouterr()


def test_one_date_style_in_table_json_and_csv(
    sync_redis: redis.Redis, redis_url: str, key_template: str, capsys: pytest.CaptureFixture[str]
) -> None:
    put(sync_redis, key_template, "BTC-USD", "1h", hours(0, 1, 3))
    base = ["coverage", "--redis-url", redis_url, "--key-template", key_template]
    outputs = {}
    for fmt in ("table", "json", "csv"):
        assert main([*base, "--format", fmt]) == 0
        outputs[fmt] = capsys.readouterr().out
    for out in outputs.values():
        assert "2024-04-04T00:00:00Z" in out and "2024-04-04T03:00:00Z" in out
        assert "+00:00" not in out and "2024-04-04 00:00" not in out
    assert json.loads(outputs["json"])[0]["first"] == "2024-04-04T00:00:00Z"
