"""coverage.py against a real Redis: counts, first/last, gaps, staleness, warmup trust, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import redis

from livermore_nb.candles import Candle
from livermore_nb.cli import main
from livermore_nb.coverage import (
    COVERAGE_COLUMNS,
    GAP_COLUMNS,
    WARMUP_COLUMNS,
    coverage,
    load_series,
    serializable,
    series_gaps,
    summarize,
    warmup_table,
)
from livermore_nb.errors import ConfigError, RedisUnavailable
from livermore_nb.store import format_key, member_json

HOUR_MS = 3_600_000
T0 = pd.Timestamp("2024-04-04 00:00", tz="UTC")


def put(client: redis.Redis, template: str, symbol: str, tf: str, stamps_ms: list[int]) -> None:
    """Write candles at ``stamps_ms`` (a gentle random walk) in the store's member format."""
    rng = np.random.default_rng(len(stamps_ms))
    close = (100 + np.cumsum(rng.normal(0, 1, len(stamps_ms)))).tolist()
    mapping = {
        member_json(Candle(ts, c, c + 1, c - 1, c + 0.5, 2.0), symbol, tf): ts
        for ts, c in zip(stamps_ms, close, strict=True)
    }
    client.zadd(format_key(template, symbol, tf), mapping)


def hours(*offsets: int) -> list[int]:
    return [int(T0.value // 10**6) + h * HOUR_MS for h in offsets]


@pytest.mark.cluster
def test_coverage_reports_counts_gaps_and_age(sync_redis: redis.Redis, key_template: str) -> None:
    # 0..9 with hours 3, 4, 5 and 8 missing: two gaps, 4 missing periods, largest 3.
    put(sync_redis, key_template, "BTC-USD", "1h", hours(0, 1, 2, 6, 7, 9))
    now = T0 + pd.Timedelta(hours=10, minutes=30)
    cov = coverage(
        sync_redis, "BTC-USD,NOPE-USD", ["1h"], key_template=key_template, target=5, now=now
    )
    assert tuple(cov.columns) == COVERAGE_COLUMNS
    btc, nope = cov.to_dict("records")
    assert (btc["symbol"], btc["timeframe"], btc["candles"], btc["target"]) == (
        "BTC-USD",
        "1h",
        6,
        5,
    )
    assert btc["first"] == T0 and btc["last"] == T0 + pd.Timedelta(hours=9)
    assert (btc["missing"], btc["largest_gap"]) == (4, 3)
    assert btc["age"] == pd.Timedelta(minutes=30) and not btc["stale"]
    assert nope["candles"] == 0 and pd.isna(nope["last"]) and pd.isna(nope["age"]) and nope["stale"]
    assert str(cov["first"].dtype) == "datetime64[ns, UTC]"


def test_stale_after_stale_periods_closed_periods(sync_redis: redis.Redis, key_template: str):
    put(sync_redis, key_template, "ETH-USD", "1h", hours(0, 1))
    closed = T0 + pd.Timedelta(hours=2)  # the newest candle closed here
    ages = {
        extra: coverage(
            sync_redis, ["ETH-USD"], "1h", key_template=key_template, now=closed + extra
        ).iloc[0]
        for extra in (pd.Timedelta(hours=2), pd.Timedelta(hours=2, seconds=1))
    }
    assert [row["stale"] for row in ages.values()] == [False, True]
    unix = coverage(
        sync_redis, ["ETH-USD"], "1h", key_template=key_template, now=closed.timestamp()
    )
    assert unix["age"].iloc[0] == pd.Timedelta(0)


@pytest.mark.cluster
def test_url_and_client_give_the_same_frame(
    sync_redis: redis.Redis, redis_url: str, key_template: str
) -> None:
    put(sync_redis, key_template, "BTC-USD", "1h", hours(0, 1, 2))
    now = T0 + pd.Timedelta(hours=5)
    by_client = coverage(sync_redis, "BTC-USD", "1h,4h", key_template=key_template, now=now)
    by_url = coverage(redis_url, "BTC-USD", "1h,4h", key_template=key_template, now=now)
    pd.testing.assert_frame_equal(by_client, by_url)


@pytest.mark.cluster
def test_series_gaps_lists_every_gap_and_is_typed_when_empty(
    sync_redis: redis.Redis, key_template: str
) -> None:
    put(sync_redis, key_template, "XTZ-USD", "1h", hours(0, 2, 5))
    frames = load_series(sync_redis, "XTZ-USD,BTC-USD", "1h", key_template=key_template)
    gaps = series_gaps(frames)
    assert tuple(gaps.columns) == GAP_COLUMNS
    assert gaps["missing"].tolist() == [1, 2]
    assert gaps["start"].tolist() == [T0 + pd.Timedelta(hours=1), T0 + pd.Timedelta(hours=3)]
    empty = series_gaps({("BTC-USD", "1h"): frames[("BTC-USD", "1h")]})
    assert tuple(empty.columns) == GAP_COLUMNS and empty.empty
    assert str(empty["start"].dtype) == "datetime64[ns, UTC]"


@pytest.mark.cluster
def test_warmup_table_trusts_long_series_only(sync_redis: redis.Redis, key_template: str):
    put(sync_redis, key_template, "BTC-USD", "1h", hours(*range(300)))
    put(sync_redis, key_template, "ETH-USD", "1h", hours(*range(100)))
    put(sync_redis, key_template, "SOL-USD", "1h", hours(*range(40)))
    frames = load_series(
        sync_redis, "BTC-USD,ETH-USD,SOL-USD,NOPE-USD", "1h", key_template=key_template
    )
    now = T0 + pd.Timedelta(hours=300, minutes=30)  # BTC's newest candle closed 30 min ago
    table = warmup_table(frames, min_candles=150, tolerance=0.5, now=now).set_index("symbol")
    assert tuple(table.reset_index().columns) == WARMUP_COLUMNS
    btc = table.loc["BTC-USD"]
    assert btc["trustworthy"] and btc["checked_n"] == 150 and btc["error"] < 0.5
    assert btc["stage"] in {"oversold", "reversing", "rebounding", "ranging", "rallying",
                            "retracing", "overbought"}  # fmt: skip
    assert table.loc["ETH-USD", "reason"].startswith("100 < 150 candles; stale")
    assert not table.loc["SOL-USD", "trustworthy"] and np.isnan(table.loc["SOL-USD", "error"])
    sol = {("SOL-USD", "1h"): frames[("SOL-USD", "1h")]}
    loose = warmup_table(sol, min_candles=10, now=T0 + pd.Timedelta(hours=40))
    assert loose.iloc[0]["reason"] == "too little history to measure the warmup error"
    btc_only = {("BTC-USD", "1h"): frames[("BTC-USD", "1h")]}
    strict = warmup_table(btc_only, tolerance=1e-12, now=now)
    assert strict.iloc[0]["reason"].startswith("warmup error")
    assert table.loc["NOPE-USD", "candles"] == 0 and not table.loc["NOPE-USD", "trustworthy"]


def test_warmup_table_distrusts_stale_series_by_coverage_rule(
    sync_redis: redis.Redis, key_template: str
) -> None:
    put(sync_redis, key_template, "BTC-USD", "1h", hours(*range(300)))
    frames = load_series(sync_redis, "BTC-USD", "1h", key_template=key_template)
    closed = T0 + pd.Timedelta(hours=300)  # the newest candle closed here
    for extra, stale in ((pd.Timedelta(hours=2), False), (pd.Timedelta(hours=2, seconds=1), True)):
        table = warmup_table(frames, now=closed + extra)
        cov = summarize(frames, now=closed + extra)
        assert table["stale"].tolist() == cov["stale"].tolist() == [stale]
        assert table["trustworthy"].tolist() == [not stale]
    late = warmup_table(frames, now=closed + pd.Timedelta(hours=2, minutes=15, seconds=4.4))
    assert late.iloc[0]["reason"] == "stale: newest candle closed 2 h 15 m 4 s ago"
    fewer = warmup_table(frames, now=closed + pd.Timedelta(hours=5), stale_periods=6)
    assert fewer.iloc[0]["trustworthy"]


def test_summarize_without_series_is_an_empty_typed_frame() -> None:
    cov = summarize({})
    assert tuple(cov.columns) == COVERAGE_COLUMNS and cov.empty


def test_bad_inputs_and_unreachable_redis() -> None:
    with pytest.raises(ConfigError):
        coverage("redis://127.0.0.1:1/0", "BTC-USD", "1h", key_template="candles:{symbol}")
    with pytest.raises(ConfigError):
        coverage("redis://127.0.0.1:1/0", "BTC-USD", "7m")
    with pytest.raises(RedisUnavailable):
        coverage("redis://127.0.0.1:1/0", "BTC-USD", "1h")


def test_serializable_has_iso_times_and_seconds(sync_redis: redis.Redis, key_template: str):
    put(sync_redis, key_template, "BTC-USD", "1h", hours(0))
    now = T0 + pd.Timedelta(hours=1, seconds=90)
    out = serializable(
        coverage(sync_redis, "BTC-USD,NOPE-USD", "1h", key_template=key_template, now=now)
    )
    records = json.loads(out.to_json(orient="records"))
    assert records[0]["first"] == "2024-04-04T00:00:00Z" and records[0]["age_s"] == 90.0
    assert records[1]["first"] is None and records[1]["age_s"] is None


@pytest.mark.cluster
def test_cli_coverage_formats(
    sync_redis: redis.Redis, redis_url: str, key_template: str, capsys: pytest.CaptureFixture[str]
) -> None:
    put(sync_redis, key_template, "BTC-USD", "1h", hours(0, 1, 3))
    base = ["coverage", "--symbols", "BTC-USD", "--timeframes", "1h", "--redis-url", redis_url]
    base += ["--key-template", key_template]
    assert main([*base, "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["candles"], row["missing"], row["last"]) == (3, 1, "2024-04-04T03:00:00Z")
    assert main([*base, "--format", "csv"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.startswith("symbol,timeframe,candles,target,first,last,missing")
    assert main(base) == 0
    assert "BTC-USD" in capsys.readouterr().out
    assert main(["coverage", "--symbols", "BTC/USD", "--redis-url", redis_url]) == 2
    assert main(["coverage", "--symbols", "BTC-USD", "--redis-url", "redis://127.0.0.1:1"]) == 4


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_cli_coverage_on_an_empty_cache_lists_every_series_as_empty(
    redis_url: str, key_template: str, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["coverage", "--symbols", "BTC-USD,NOPE-USD", "--timeframes", "5m,1h"]
    code = main([*args, "--redis-url", redis_url, "--key-template", key_template, "--format", fmt])
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in err, err
    if fmt == "json":
        rows = json.loads(out)
        assert len(rows) == 4 and all(r["candles"] == 0 and r["stale"] for r in rows)
        assert all(r["first"] is None and r["age_s"] is None for r in rows)
    else:
        assert out.count("NOPE-USD") == 2 and out.count("BTC-USD") == 2


def test_the_notebooks_code_path_runs_on_an_empty_cache(redis_url: str, key_template: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from livermore_nb.plots import coverage_heatmap, gap_timeline, staleness_chart

    frames = load_series(redis_url, "BTC-USD,ETH-USD", "5m,1h,4h", key_template=key_template)
    cov = summarize(frames, target=300)  # coverage.ipynb
    assert len(cov) == 6 and (cov["candles"] == 0).all() and cov["stale"].all()
    assert cov["age"].isna().all() and str(cov["age"].dtype).startswith("timedelta64")
    gaps = series_gaps(frames)
    for figure in (coverage_heatmap(cov), gap_timeline(cov, gaps), staleness_chart(cov)):
        assert figure is not None
    table = warmup_table(frames)  # macdv_warmup.ipynb
    assert len(table) == 6 and not table["trustworthy"].any()
