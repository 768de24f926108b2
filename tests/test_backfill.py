"""End to end: the backfill against the emulator over HTTP into a real Redis.

Tests marked ``cluster`` run on a single node and again on a 3-master Redis
Cluster: the same content checks must pass on both.

The truth is the emulator's own data (``Emulator.candles``); 4h is aggregated
here from the emulator's 1h candles, independently of the package.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

import pytest
import redis

from livermore_nb import BackfillConfig, backfill
from livermore_nb.backfill import Window, derive_warm, parse_symbols, plan
from livermore_nb.coinbase import page_windows
from livermore_nb.emulator import Emulator, EmulatorConfig, TestKey, make_test_key
from livermore_nb.errors import EXIT_AUTH, EXIT_NOT_READY, ConfigError, RedisUnavailable
from livermore_nb.timeframes import TIMEFRAMES, Timeframe

SYMBOLS = ("BTC-USD", "XTZ-USD", "SOL-USD", "ICP-USD")  # liquid, gappy, synthetic, illiquid
FIELDS = ("open", "high", "low", "close", "volume")


def stored(sync_redis: redis.Redis, template: str, symbol: str, tf: str) -> list[dict]:
    """The members of one series, oldest first, checked against their scores."""
    key = template.format(user_id=1, exchange_id=1, symbol=symbol, timeframe=tf)
    rows = sync_redis.zrange(key, 0, -1, withscores=True)
    docs = [json.loads(member) for member, _ in rows]
    assert [d["timestamp"] for d in docs] == [int(score) for _, score in rows]
    return docs


def emulator_candles(emu: Emulator, symbol: str, tf: Timeframe, start: int, end: int) -> list[dict]:
    """The emulator's candles in ``[start, end)``, oldest first, as floats, in legal pages."""
    out: list[dict] = []
    step = 300 * tf.seconds
    for lo in range(start, end, step):
        for raw in emu.candles(symbol, tf.granularity, lo, min(lo + step, end)):
            out.append(
                {"timestamp": int(raw["start"]) * 1000, **{f: float(raw[f]) for f in FIELDS}}
            )
    inside = {c["timestamp"]: c for c in out if start * 1000 <= c["timestamp"] < end * 1000}
    return [inside[ts] for ts in sorted(inside)]  # the server may include ``end``


def four_hour_truth(hourly: Iterable[dict], start_ms: int, end_ms: int) -> list[dict]:
    """4h candles from 1h ones, by hand: UTC-aligned, complete buckets in the window only."""
    buckets: dict[int, list[dict]] = {}
    for c in hourly:
        buckets.setdefault(c["timestamp"] // 14_400_000 * 14_400_000, []).append(c)
    out = []
    for ts, group in sorted(buckets.items()):
        if ts < start_ms or ts + 14_400_000 > end_ms:
            continue
        out.append(
            {
                "timestamp": ts,
                "open": group[0]["open"],
                "high": max(c["high"] for c in group),
                "low": min(c["low"] for c in group),
                "close": group[-1]["close"],
                "volume": sum(c["volume"] for c in group),
            }
        )
    return out


def assert_same_candles(got: list[dict], want: list[dict]) -> None:
    assert [c["timestamp"] for c in got] == [c["timestamp"] for c in want]
    for g, w in zip(got, want, strict=True):
        for f in FIELDS:
            assert g[f] == pytest.approx(w[f], rel=1e-12), (g["timestamp"], f)


def config(redis_url: str, key_template: str, **overrides) -> BackfillConfig:
    return BackfillConfig(
        **{"symbols": SYMBOLS, "redis_url": redis_url, "key_template": key_template, **overrides}
    )


@pytest.mark.cluster
@pytest.mark.parametrize("hours_back", [0, 1, 2, 3])  # every phase of "now" in a 4h bucket
async def test_redis_equals_the_emulator_candle_for_candle(
    emulator: Emulator, key_env, redis_url, key_template, sync_redis, hours_back: int
):
    now = time.time() - hours_back * 3600
    report = await backfill(config(redis_url, key_template), env=key_env, clock=lambda: now)
    not_ready = {(s.symbol, s.timeframe, s.status) for s in report.series if s.status != "ready"}
    assert not_ready == {("BTC-USD", "1d", "short"), ("XTZ-USD", "1d", "short")}  # ~32-89 days
    for symbol in SYMBOLS:
        for name in ("5m", "15m", "1h", "1d"):
            tf = TIMEFRAMES[name]
            got = stored(sync_redis, key_template, symbol, name)
            closed_end = tf.floor(now)
            want = emulator_candles(emulator, symbol, tf, got[0]["timestamp"] // 1000, closed_end)
            assert_same_candles(got, want)
            assert got[-1]["symbol"] == symbol and got[-1]["timeframe"] == name
            history = emulator_candles(
                emulator, symbol, tf, 0 if name == "1d" else int(now) - 86400 * 30, closed_end
            )
            assert len(got) == min(300, len(history))
        h4 = TIMEFRAMES["4h"]
        got = stored(sync_redis, key_template, symbol, "4h")
        end = h4.floor(now)
        hourly = emulator_candles(emulator, symbol, TIMEFRAMES["1h"], end - 400 * h4.seconds, end)
        want = four_hour_truth(hourly, got[0]["timestamp"], end * 1000)
        assert_same_candles(got, want)
        assert len(got) == 300 or symbol in ("BTC-USD", "XTZ-USD")  # recorded: ~32 days


@pytest.mark.cluster
async def test_gappy_products_page_back_until_enough_candles(
    emulator: Emulator, key_env, redis_url, key_template, sync_redis
):
    report = await backfill(
        config(redis_url, key_template, symbols=("XTZ-USD", "ICP-USD"), timeframes="5m"),
        env=key_env,
    )
    by_series = emulator.stats.by_series
    for symbol in ("XTZ-USD", "ICP-USD"):
        assert len(stored(sync_redis, key_template, symbol, "5m")) == 300
        assert by_series[(symbol, "FIVE_MINUTE")] >= 2  # 300 periods hold fewer than 300 candles
    assert report.ready


@pytest.mark.cluster
async def test_open_candle_only_with_include_open(
    emulator: Emulator, key_env, redis_url, key_template, sync_redis
):
    now = time.time()
    tf = TIMEFRAMES["5m"]
    cfg = config(redis_url, key_template, symbols=("BTC-USD",), timeframes="5m")
    await backfill(cfg, env=key_env, clock=lambda: now)
    assert stored(sync_redis, key_template, "BTC-USD", "5m")[-1]["timestamp"] < tf.floor(now) * 1000
    await backfill(
        BackfillConfig(**{**cfg.__dict__, "include_open": True}), env=key_env, clock=lambda: now
    )
    got = stored(sync_redis, key_template, "BTC-USD", "5m")
    open_candle = emulator_candles(
        emulator, "BTC-USD", tf, tf.floor(now), tf.floor(now) + tf.seconds
    )
    assert got[-1]["timestamp"] == tf.floor(now) * 1000
    assert_same_candles(got[-1:], open_candle)


@pytest.mark.cluster
async def test_rerun_is_idempotent(
    emulator: Emulator, key_env, redis_url, key_template, sync_redis
):
    now = time.time()
    cfg = config(redis_url, key_template, symbols=("SOL-USD", "XTZ-USD"), full=True)
    await backfill(cfg, env=key_env, clock=lambda: now)
    first = {tf: stored(sync_redis, key_template, "XTZ-USD", tf) for tf in cfg.timeframes}
    await backfill(cfg, env=key_env, clock=lambda: now)
    assert {tf: stored(sync_redis, key_template, "XTZ-USD", tf) for tf in cfg.timeframes} == first


DAY = 86400
YESTERDAY = int(time.time()) // DAY * DAY - DAY
"""Yesterday's midnight: restart moments around it are all in the past, so the data exists."""


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("restart_at", "downtime", "requests_per_symbol"),
    [
        (YESTERDAY + 13 * 3600 + 420, 600, 1),  # midday: only 5m and 15m have news
        (YESTERDAY + 300, 600, 1),  # just past midnight: a new 1d, still inside one 5m page
        (YESTERDAY + 5400, 7200, 2),  # 1d reaches 25.5 h back: beyond one page, fetched itself
    ],
)
async def test_warm_restart_builds_every_series_from_one_5m_page(
    emulator: Emulator,
    key_env,
    redis_url,
    key_template,
    sync_redis,
    restart_at: int,
    downtime: int,
    requests_per_symbol: int,
):
    symbols = ("SOL-USD", "ICP-USD", "ADA-USD")  # liquid and illiquid synthetic products
    cfg = config(redis_url, key_template, symbols=symbols)
    await backfill(cfg, env=key_env, clock=lambda: restart_at - downtime)
    before = emulator.stats.total
    report = await backfill(cfg, env=key_env, clock=lambda: restart_at)
    assert report.ready
    assert emulator.stats.total - before == report.requests == requests_per_symbol * len(symbols)
    for symbol in symbols:
        for name in ("5m", "15m", "1h", "1d"):
            tf = TIMEFRAMES[name]
            got = stored(sync_redis, key_template, symbol, name)
            want = emulator_candles(
                emulator, symbol, tf, got[0]["timestamp"] // 1000, tf.floor(restart_at)
            )
            assert_same_candles(got, want)  # derived candles are the API's own, no hole
        end = TIMEFRAMES["4h"].floor(restart_at)
        got = stored(sync_redis, key_template, symbol, "4h")
        hourly = emulator_candles(
            emulator, symbol, TIMEFRAMES["1h"], got[0]["timestamp"] // 1000, end
        )
        assert_same_candles(got, four_hour_truth(hourly, got[0]["timestamp"], end * 1000))
    stamps = [c["timestamp"] for c in stored(sync_redis, key_template, "SOL-USD", "5m")]
    assert len(stamps) == 300 + downtime // 300
    liquid = config(redis_url, key_template, symbols=("SOL-USD", "ADA-USD"))
    report = await backfill(liquid, env=key_env, clock=lambda: restart_at)
    assert report.requests == 0 and report.ready  # nothing new can exist: no request at all


@pytest.mark.cluster
async def test_a_restart_after_a_long_downtime_fetches_each_series_itself(
    emulator: Emulator, key_env, redis_url, key_template
):
    cfg = config(redis_url, key_template, symbols=("SOL-USD",))
    restart_at = YESTERDAY + 12 * 3600
    await backfill(cfg, env=key_env, clock=lambda: restart_at - 2 * DAY)
    report = await backfill(cfg, env=key_env, clock=lambda: restart_at)
    assert report.ready
    assert report.requests == len(plan(cfg.symbols, cfg.timeframes))  # 5m, 15m, 1h (+4h), 1d


@pytest.mark.cluster
async def test_unknown_product_fails_alone(emulator: Emulator, key_env, redis_url, key_template):
    report = await backfill(
        config(redis_url, key_template, symbols=("NOPE-USD", "SOL-USD")), env=key_env
    )
    status = {(s.symbol, s.timeframe): s for s in report.series}
    assert all(status[("SOL-USD", tf)].status == "ready" for tf in ("5m", "15m", "1h", "4h", "1d"))
    nope = [s for s in report.series if s.symbol == "NOPE-USD"]
    assert len(nope) == 5
    assert all(s.status == "failed" and "not supported" in s.error for s in nope)
    assert report.exit_code == EXIT_NOT_READY and not report.ready


@pytest.mark.cluster
async def test_rejected_key_stops_the_run_with_exit_5(
    emulator: Emulator, key_env, redis_url, key_template, sync_redis
):
    stranger = make_test_key("ed25519")
    env = {
        **key_env,
        "COINBASE_API_KEY_NAME": stranger.name,
        "COINBASE_API_PRIVATE_KEY": stranger.secret,
    }
    report = await backfill(config(redis_url, key_template), env=env)
    assert report.exit_code == EXIT_AUTH
    assert "401" in (report.error or "")
    assert emulator.stats.by_status.get(401, 0) >= 1
    assert not list(sync_redis.scan_iter(match=key_template.split("{")[0] + "*"))


async def test_unreachable_redis_fails_before_any_request(
    emulator: Emulator, key_env, key_template
):
    with pytest.raises(RedisUnavailable):
        await backfill(config("redis://127.0.0.1:1/0", key_template), env=key_env)
    assert emulator.stats.total == 0


@pytest.mark.cluster
async def test_public_endpoint_without_a_key(emulator: Emulator, redis_url, key_template):
    env = {"COINBASE_API_URL": emulator.url}
    report = await backfill(config(redis_url, key_template, symbols=("SOL-USD",)), env=env)
    assert report.ready
    assert emulator.stats.by_endpoint == {"public": report.requests}


@pytest.mark.cluster
async def test_client_is_correct_when_the_server_includes_end(
    ec_key: TestKey, key_env, redis_url, key_template, sync_redis
):
    emu_config = EmulatorConfig(keys={ec_key.name: ec_key.public_key}, end_inclusive=True)
    now = time.time()
    async with Emulator(emu_config) as emu:
        env = {**key_env, "COINBASE_API_URL": emu.url}
        cfg = config(redis_url, key_template, symbols=("SOL-USD",), timeframes="1h")
        report = await backfill(cfg, env=env, clock=lambda: now)
        got = stored(sync_redis, key_template, "SOL-USD", "1h")
        tf = TIMEFRAMES["1h"]
        want = emulator_candles(emu, "SOL-USD", tf, tf.floor(now) - 300 * 3600, tf.floor(now))
    assert report.ready
    assert_same_candles(got, want[-300:])


@pytest.mark.slow
async def test_default_pace_never_trips_the_rate_limit(
    emulator: Emulator, key_env, redis_url, key_template
):
    from livermore_nb.demo import DEMO_SYMBOLS, RECORDED

    report = await backfill(config(redis_url, key_template, symbols=DEMO_SYMBOLS), env=key_env)
    stats = emulator.stats
    short = {(s.symbol, s.timeframe) for s in report.series if s.status != "ready"}
    assert short == {(symbol, "1d") for symbol in RECORDED}  # ~32 days of recorded history
    assert stats.by_status.get(429, 0) == 0 and report.rate_limited == 0
    assert stats.peak_1s <= 26  # 25/s pacer; +1 for arrival jitter on loopback
    assert report.duration_s >= (report.requests - 1) / 25  # never faster than the pace


async def test_a_page_that_fails_for_good_stops_its_sibling_pages(
    ec_key: TestKey, key_env, redis_url, key_template
):
    from livermore_nb.ratelimit import RetryPolicy

    emu_config = EmulatorConfig(keys={ec_key.name: ec_key.public_key}, error_rate=1.0)
    retry = RetryPolicy(attempts=2, backoff_initial_s=0.25, backoff_max_s=0.3, jitter_s=0)
    async with Emulator(emu_config) as emu:
        env = {**key_env, "COINBASE_API_URL": emu.url}
        cfg = config(redis_url, key_template, symbols=("SOL-USD",), timeframes="4h", rate=5)
        now = time.time()
        report = await backfill(
            BackfillConfig(**{**cfg.__dict__, "retry": retry}), env=env, clock=lambda: now
        )
    h1, h4 = TIMEFRAMES["1h"], TIMEFRAMES["4h"]
    # a 4h-only task fetches the hours of the closed 4h buckets: up to the open 4h bucket
    pages = len(page_windows(h1, h4.floor(now) - 300 * h4.seconds, h4.floor(now), 300))
    assert [s.status for s in report.series] == ["failed"]
    assert "HTTP 5" in report.series[0].error
    # every page × 2 tries would be 2 × pages requests; the first page to give up stops the rest
    assert pages < report.requests < 2 * pages


@pytest.mark.parametrize(
    "symbol", ["BTC-USD", "1INCH-USD", "btc-usdc", "BIT-28JUN24-CDE", "BTC-PERP-INTX"]
)
def test_real_coinbase_product_ids_are_accepted(symbol: str) -> None:
    assert parse_symbols(f" {symbol} ") == (symbol.upper(),)


@pytest.mark.parametrize(
    "symbol", ["BTC", "BTC_USD", "BTC-USD;DEL", "-USD", "A-B-C-D-E", "BTC USD"]
)
def test_malformed_product_ids_are_config_errors(symbol: str) -> None:
    with pytest.raises(ConfigError, match="malformed symbol"):
        parse_symbols(symbol)


@pytest.mark.cluster
async def test_an_interrupted_run_reports_what_redis_still_holds(
    emulator: Emulator, key_env, redis_url, key_template
):
    import asyncio

    cfg = config(redis_url, key_template, symbols=("SOL-USD",), timeframes="1h")
    await backfill(cfg, env=key_env)
    stop = asyncio.Event()
    stop.set()  # interrupted before anything could be fetched
    report = await backfill(
        BackfillConfig(**{**cfg.__dict__, "full": True}), env=key_env, stop=stop
    )
    assert report.exit_code == EXIT_NOT_READY
    [series] = report.series
    assert series.status == "failed" and "interrupted" in series.error
    assert series.candles == 300 and series.last is not None  # still in Redis, untouched


async def test_an_empty_short_remainder_page_does_not_end_the_paging(emulator: Emulator, key_env):
    import aiohttp

    from livermore_nb.coinbase import CoinbaseClient, load_credentials
    from livermore_nb.ratelimit import Pacer, RequestStats, RetryPolicy

    h1 = TIMEFRAMES["1h"]
    newest = h1.floor(time.time()) - 400 * 3600
    # an hour in which the illiquid ICP-USD has no candle: it becomes a 1-hour remainder page
    hole = next(
        t
        for t in range(newest, newest - 2000 * 3600, -3600)
        if not emulator.candles("ICP-USD", "ONE_HOUR", t, t + 3600)
    )
    async with aiohttp.ClientSession() as session:
        client = CoinbaseClient(
            session,
            api_url=emulator.url,
            credentials=load_credentials(key_env),
            pacer=Pacer(25),
            retry=RetryPolicy(),
            stats=RequestStats(),
        )
        found, covered = await client.fetch(
            "ICP-USD", h1, hole, hole + 301 * 3600, more_needed=lambda c, _: len(c) < 250
        )
    assert len(found) >= 250  # one full page holds ~210 of ICP's candles: it paged back
    assert covered < hole


def test_derive_warm_moves_only_warm_series_one_page_covers() -> None:
    tfs = ("1m", "5m", "15m", "1h", "4h", "1d")
    now = 1_796_000_000
    windows = {  # what each series misses, as target_window would say
        "1m": Window(now - 600, now, False),
        "5m": None,  # fresh already
        "15m": Window(now - 1800, now, False),
        "1h": Window(now - 3600, now, True),  # cold: needs its own 300 candles
        "4h": Window(now - 4 * 3600, now, False),
        "1d": Window(now - 26 * 3600, now, False),  # beyond one 25 h page of 5m
    }
    tasks = derive_warm(plan(["SOL-USD"], tfs), lambda _, tf: windows[tf.name], 300)
    by_source = {t.source.name: [tf.name for tf in t.targets] for t in tasks}
    assert by_source == {"1m": ["1m"], "5m": ["5m", "15m", "4h"], "1h": ["1h"], "1d": ["1d"]}
