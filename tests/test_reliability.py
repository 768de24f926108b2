"""Reliability under upstream faults, Redis faults, concurrent writers and interruption.

Everything runs against the real emulator over HTTP and a real Redis; the
emulator's own ``candles()`` is the truth that Redis is compared with (4h is
aggregated here from the emulator's 1h candles with pandas, independently of
the package).
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis
from conftest import LocalCluster, RedisServer

from livermore_nb.backfill import BackfillConfig, BackfillReport, backfill
from livermore_nb.emulator import (
    DEFAULT_ILLIQUID,
    DEFAULT_SYNTHETIC,
    Emulator,
    EmulatorConfig,
    EmulatorThread,
    TestKey,
)
from livermore_nb.errors import EXIT_NOT_READY, EXIT_REDIS, RedisUnavailable
from livermore_nb.ratelimit import RetryPolicy
from livermore_nb.timeframes import get_timeframe

SYMBOLS_25 = ("BTC-USD", "ETH-USD", "DOGE-USD", "XTZ-USD", *DEFAULT_SYNTHETIC)
FIELDS = {"timestamp", "open", "high", "low", "close", "volume", "symbol", "timeframe"}
FAST_RETRY = RetryPolicy(
    attempts=8, backoff_initial_s=0.05, backoff_max_s=0.4, jitter_s=0.05, cool_down_s=0.3
)
Row = tuple[int, float, float, float, float, float]


# ---------------------------------------------------------------- the truth


def _native_truth(emu: Emulator, product: str, granularity: str, seconds: int, end: int) -> list:
    """Every emulator candle in a generous span before ``end``, oldest first, as rows."""
    rows: list[Row] = []
    for page in range(6):
        hi = end - page * 300 * seconds
        batch = emu.candles(product, granularity, hi - 300 * seconds, hi)
        rows += [
            (int(c["start"]) * 1000, *(float(c[k]) for k in ("open", "high", "low", "close")),
             float(c["volume"]))
            for c in batch
        ]  # fmt: skip
    return sorted(rows)


def truth(emu: Emulator, product: str, timeframe: str, n: int, now: float) -> list[Row]:
    """The newest ``n`` closed candles the API has for a series (4h built from 1h here)."""
    tf = get_timeframe(timeframe)
    end = tf.floor(now)
    if tf.native:
        return _native_truth(emu, product, tf.granularity or "", tf.seconds, end)[-n:]
    hourly = _native_truth(emu, product, "ONE_HOUR", 3600, end)
    frame = pd.DataFrame(hourly, columns=["t", "open", "high", "low", "close", "volume"])
    frame["bucket"] = frame["t"] // tf.ms * tf.ms
    first_complete = -(-frame["t"].min() // tf.ms) * tf.ms
    frame = frame[frame["bucket"] >= first_complete]
    agg = frame.groupby("bucket").agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
    )
    return [(int(t), *map(float, row)) for t, row in agg.iterrows()][-n:]


def stored(client: redis.Redis, key: str, symbol: str, timeframe: str) -> list[Row]:
    """A series as Redis holds it, after checking every member is well formed."""
    tf = get_timeframe(timeframe)
    rows = client.zrange(key, 0, -1, withscores=True)
    scores = [int(score) for _, score in rows]
    assert len(set(scores)) == len(scores), f"{key}: more than one member per timestamp"
    out = []
    for member, score in rows:
        doc = json.loads(member)
        assert set(doc) == FIELDS, f"{key}: member fields {sorted(doc)}"
        assert (doc["symbol"], doc["timeframe"]) == (symbol, timeframe)
        ts, o, h, lo, c, v = (
            doc[k] for k in ("timestamp", "open", "high", "low", "close", "volume")
        )
        assert ts == int(score) and ts % tf.ms == 0, f"{key}: {ts} off grid or not its score"
        assert all(isinstance(x, float | int) and math.isfinite(x) for x in (o, h, lo, c, v))
        assert 0 < lo <= min(o, c) <= max(o, c) <= h and v >= 0, f"{key}: bad candle {doc}"
        out.append((ts, float(o), float(h), float(lo), float(c), float(v)))
    return out


def same_series(got: list[Row], want: list[Row]) -> bool:
    """Equal timestamps and prices; volumes equal up to summation order."""
    return len(got) == len(want) and all(
        g[:5] == w[:5] and math.isclose(g[5], w[5], rel_tol=1e-12, abs_tol=1e-12)
        for g, w in zip(got, want, strict=True)
    )


def key_of(template: str, symbol: str, timeframe: str) -> str:
    """The Redis key of one series under ``template`` (user 1, exchange 1)."""
    return template.format(user_id=1, exchange_id=1, symbol=symbol, timeframe=timeframe)


def env_for(url: str, key: TestKey) -> dict[str, str]:
    """A private-endpoint environment for ``key`` against ``url``."""
    return {
        "COINBASE_API_URL": url,
        "COINBASE_API_KEY_NAME": key.name,
        "COINBASE_API_PRIVATE_KEY": key.secret,
    }


def emulator_config(key: TestKey, **overrides: Any) -> EmulatorConfig:
    """An emulator that knows ``key`` and serves long history for recorded products."""
    return EmulatorConfig(keys={key.name: key.public_key}, extend_history=True, **overrides)


def assert_all_or_nothing(
    client: redis.Redis,
    emu: Emulator,
    template: str,
    symbols: tuple[str, ...],
    timeframes: tuple[str, ...],
    n: int,
    now: float,
) -> int:
    """Every series is either exactly the emulator's data or absent; returns how many exist."""
    present = 0
    for symbol in symbols:
        for timeframe in timeframes:
            got = stored(client, key_of(template, symbol, timeframe), symbol, timeframe)
            if got:
                present += 1
                want = truth(emu, symbol, timeframe, n, now)
                assert same_series(got, want), f"{symbol} {timeframe}: half or wrong series"
    return present


# ---------------------------------------------------------------- upstream faults


@pytest.mark.slow
async def test_faulty_upstream_still_fills_every_series_with_the_emulators_data(
    ec_key: TestKey, redis_url: str, key_template: str, sync_redis: redis.Redis
) -> None:
    cfg = emulator_config(
        ec_key,
        error_rate=0.10,
        timeout_rate=0.02,
        stall_s=0.5,
        malformed_rate=0.05,
        rate_limit_private=20,
        retry_after_s=0.3,
        seed=11,
    )
    timeframes = ("5m", "1h", "4h")
    now = time.time()
    async with Emulator(cfg) as emu:
        config = BackfillConfig(
            symbols=SYMBOLS_25,
            timeframes=timeframes,
            candles=100,
            min_candles=100,
            rate=30,
            redis_url=redis_url,
            key_template=key_template,
            timeout_s=0.3,
            retry=FAST_RETRY,
        )
        report = await backfill(config, env=env_for(emu.url or "", ec_key), clock=lambda: now)
        stats = emu.stats
        assert {"error", "timeout", "malformed"} <= set(stats.by_fault), stats.by_fault
        assert stats.rate_limited > 0 and report.rate_limited > 0
        assert report.retries > 0
        assert report.ready, [(s.symbol, s.timeframe, s.error) for s in report.series]
        assert len(report.series) == 75
        for symbol in SYMBOLS_25:
            for timeframe in timeframes:
                got = stored(sync_redis, key_of(key_template, symbol, timeframe), symbol, timeframe)
                want = truth(emu, symbol, timeframe, 100, now)
                assert len(want) == 100
                assert same_series(got, want), f"{symbol} {timeframe} differs from the emulator"


async def test_retries_are_bounded_and_an_exhausted_series_fails_with_the_last_error(
    ec_key: TestKey, redis_url: str, key_template: str, sync_redis: redis.Redis
) -> None:
    symbols = ("BTC-USD", "ETH-USD", "SOL-USD")
    async with Emulator(emulator_config(ec_key, error_rate=1.0)) as emu:
        config = BackfillConfig(
            symbols=symbols,
            timeframes=("1h", "4h"),
            candles=50,
            min_candles=10,
            redis_url=redis_url,
            key_template=key_template,
            retry=RetryPolicy(attempts=3, backoff_initial_s=0.01, backoff_max_s=0.02, jitter_s=0),
        )
        report = await backfill(config, env=env_for(emu.url or "", ec_key))
        assert emu.stats.total == 3 * 3  # one page per task, three tries each, no more
    assert report.requests == 9 and report.retries == 6
    assert report.exit_code == EXIT_NOT_READY and not report.ready
    for series in report.series:
        assert series.status == "failed"
        assert series.error is not None and series.error.startswith("HTTP 50"), series.error
    assert not list(sync_redis.scan_iter(match=key_template.split(":candles")[0] + ":*"))


async def test_when_some_series_run_out_of_retries_the_others_still_complete(
    ec_key: TestKey, redis_url: str, key_template: str, sync_redis: redis.Redis
) -> None:
    symbols = tuple(s for s in SYMBOLS_25 if s not in DEFAULT_ILLIQUID)  # one page each
    now = time.time()
    async with Emulator(emulator_config(ec_key, error_rate=0.5, seed=3)) as emu:
        config = BackfillConfig(
            symbols=symbols,
            timeframes=("1h",),
            candles=60,
            min_candles=60,
            rate=200,
            redis_url=redis_url,
            key_template=key_template,
            retry=RetryPolicy(attempts=1),
        )
        report = await backfill(config, env=env_for(emu.url or "", ec_key), clock=lambda: now)
        assert emu.stats.total == len(symbols) == 23
        statuses = {s.status for s in report.series}
        assert statuses == {"ready", "failed"}, statuses
        for s in report.series:
            got = stored(sync_redis, key_of(key_template, s.symbol, "1h"), s.symbol, "1h")
            if s.status == "failed":
                assert got == [] and s.error and s.error.startswith("HTTP 50"), s
            else:
                assert same_series(got, truth(emu, s.symbol, "1h", 60, now))
    assert report.exit_code == EXIT_NOT_READY


# ---------------------------------------------------------------- Redis faults


async def test_redis_unreachable_at_start_stops_before_any_api_request(
    ec_key: TestKey, emulator: Emulator
) -> None:
    config = BackfillConfig(symbols=("BTC-USD",), redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(RedisUnavailable) as err:
        await backfill(config, env=env_for(emulator.url or "", ec_key))
    assert err.value.exit_code == EXIT_REDIS
    assert emulator.stats.total == 0


def _after_writes(n: int, action: Callable[[], None]) -> Callable[[dict[str, Any]], None]:
    """An event sink that runs ``action`` once, when ``n`` series have been done."""
    fired = threading.Event()

    def sink(event: dict[str, Any]) -> None:
        if event["event"] == "backfill_progress" and event["done"] >= n and not fired.is_set():
            fired.set()
            action()

    return sink


REDIS_SYMBOLS = SYMBOLS_25[:12]


def _redis_run_config(url: str) -> BackfillConfig:
    """A 24-series run slow enough to be interrupted in the middle."""
    return BackfillConfig(
        symbols=REDIS_SYMBOLS,
        timeframes=("5m", "1h"),
        candles=80,
        min_candles=80,
        rate=40,
        concurrency=4,
        redis_url=url,
        key_template="t:{symbol}:{timeframe}",
        retry=FAST_RETRY,
    )


async def test_redis_restart_mid_run_is_survived_and_every_series_is_whole(
    ec_key: TestKey, redis_server: RedisServer
) -> None:
    now = time.time()

    def restart() -> None:
        redis_server.kill()
        threading.Timer(0.3, redis_server.start).start()

    async with Emulator(emulator_config(ec_key, latency_ms=30)) as emu:
        report = await backfill(
            _redis_run_config(redis_server.url),
            env=env_for(emu.url or "", ec_key),
            on_event=_after_writes(6, restart),
            clock=lambda: now,
        )
        assert report.error is None and report.ready, report.to_dict()
        with redis.Redis.from_url(redis_server.url) as client:
            present = assert_all_or_nothing(
                client, emu, "t:{symbol}:{timeframe}", REDIS_SYMBOLS, ("5m", "1h"), 80, now
            )
    assert present == 24


async def test_dropped_redis_connections_mid_run_are_survived(
    ec_key: TestKey, redis_server: RedisServer
) -> None:
    now = time.time()
    admin = redis.Redis.from_url(redis_server.url)

    def drop() -> None:
        admin.client_kill_filter(_type="normal", skipme=True)

    async with Emulator(emulator_config(ec_key, latency_ms=30)) as emu:
        report = await backfill(
            _redis_run_config(redis_server.url),
            env=env_for(emu.url or "", ec_key),
            on_event=_after_writes(4, drop),
            clock=lambda: now,
        )
        assert report.ready, report.to_dict()
        present = assert_all_or_nothing(
            admin, emu, "t:{symbol}:{timeframe}", REDIS_SYMBOLS, ("5m", "1h"), 80, now
        )
    admin.close()
    assert present == 24


@asynccontextmanager
async def _run_losing_redis(
    key: TestKey, url: str, kill: Callable[[], None], within_s: float
) -> AsyncIterator[tuple[Emulator, BackfillReport, float]]:
    """The 24-series run with ``kill`` after 6 series; it must stop with exit 4 in ``within_s``.

    Yields the (still running) emulator, the report and the run's "now".
    """
    now = time.time()
    async with Emulator(emulator_config(key, latency_ms=30)) as emu:
        started = time.monotonic()
        report = await backfill(
            _redis_run_config(url),
            env=env_for(emu.url or "", key),
            on_event=_after_writes(6, kill),
            clock=lambda: now,
        )
        assert time.monotonic() - started < within_s
        assert report.exit_code == EXIT_REDIS and not report.ready
        assert report.error and "Redis unreachable" in report.error
        yield emu, report, now


async def test_redis_gone_for_good_mid_run_exits_4_and_leaves_no_half_series(
    ec_key: TestKey, redis_server: RedisServer
) -> None:
    async with _run_losing_redis(ec_key, redis_server.url, redis_server.kill, 15) as run:
        emu, report, now = run
        assert any(s.status == "failed" for s in report.series)
        redis_server.start()  # reload what was persisted before the kill
        with redis.Redis.from_url(redis_server.url) as client:
            present = assert_all_or_nothing(
                client, emu, "t:{symbol}:{timeframe}", REDIS_SYMBOLS, ("5m", "1h"), 80, now
            )
    ready = sum(s.status == "ready" for s in report.series)
    assert 6 <= ready <= present < 24  # a write whose reply was lost may be whole in Redis


async def test_a_cluster_master_killed_mid_run_exits_4_and_the_rest_stays_whole(
    ec_key: TestKey, local_cluster: LocalCluster
) -> None:
    kill = functools.partial(local_cluster.kill, 2)
    async with _run_losing_redis(ec_key, local_cluster.url, kill, 30) as (emu, report, now):
        survivor = local_cluster.node(0)  # slots 0-5460: whole series or none, never half
        template = "t:{symbol}:{timeframe}"
        for symbol, tf in [(s, tf) for s in REDIS_SYMBOLS for tf in ("5m", "1h")]:
            key = key_of(template, symbol, tf)
            if survivor.cluster("keyslot", key) <= 5460:
                got = stored(survivor, key, symbol, tf)
                assert not got or same_series(got, truth(emu, symbol, tf, 80, now)), key
        survivor.close()
    assert any(s.status == "ready" for s in report.series)


async def test_two_backfills_writing_the_same_keys_keep_one_member_per_timestamp(
    ec_key: TestKey, redis_url: str, key_template: str, sync_redis: redis.Redis
) -> None:
    symbols, timeframes, now = SYMBOLS_25[4:12], ("5m", "1h", "4h"), time.time()
    async with (
        Emulator(emulator_config(ec_key, seed=1)) as emu_a,
        Emulator(emulator_config(ec_key, seed=2)) as emu_b,
    ):
        config = BackfillConfig(
            symbols=symbols,
            timeframes=timeframes,
            candles=60,
            min_candles=60,
            rate=100,
            full=True,
            redis_url=redis_url,
            key_template=key_template,
        )
        reports = await asyncio.gather(
            *(
                backfill(config, env=env_for(emu.url or "", ec_key), clock=lambda: now)
                for emu in (emu_a, emu_b)
            )
        )
        assert all(r.ready for r in reports)
        winners = set()
        for symbol in symbols:
            for timeframe in timeframes:
                key = key_of(key_template, symbol, timeframe)
                got = stored(sync_redis, key, symbol, timeframe)  # asserts unique scores
                a, b = (truth(e, symbol, timeframe, 60, now) for e in (emu_a, emu_b))
                assert a != b  # the two writers really disagree on every series
                assert same_series(got, a) or same_series(got, b), f"{key} mixes both writers"
                winners.add(same_series(got, a))
    assert len(winners) >= 1


# ---------------------------------------------------------------- interruption


@pytest.fixture
def slow_emulator(ec_key: TestKey) -> Iterator[EmulatorThread]:
    """An emulator in its own thread answering after ~250 ms (for subprocess runs)."""
    with EmulatorThread(emulator_config(ec_key, latency_ms=250, shutdown_timeout_s=0.2)) as running:
        yield running


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_cli_fast_with_a_report_and_consistent_redis(
    sig: signal.Signals,
    slow_emulator: EmulatorThread,
    ec_key: TestKey,
    redis_url: str,
    key_template: str,
    sync_redis: redis.Redis,
    tmp_path: Path,
) -> None:
    report_path = tmp_path / "report.json"
    symbols = SYMBOLS_25[:10]
    env = {**os.environ, **env_for(slow_emulator.url, ec_key), "REDIS_URL": redis_url}
    args = [sys.executable, "-m", "livermore_nb.cli", "backfill", "--symbols", ",".join(symbols)]
    args += ["--timeframes", "5m,1h", "--candles", "60", "--min-candles", "60", "--rate", "8"]
    args += ["--concurrency", "2", "--key-template", key_template, "--report", str(report_path)]
    args += ["--log-format", "json"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    for line in proc.stderr:
        event = json.loads(line)
        if event.get("event") == "backfill_progress" and event["done"] >= 2:
            break
    sent = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=10)
    elapsed = time.monotonic() - sent
    assert elapsed < 2.0, f"took {elapsed:.2f}s to stop"
    assert proc.returncode == EXIT_NOT_READY, err
    assert b"Traceback" not in err
    report = json.loads(report_path.read_text())
    assert report["ready"] is False and "interrupted" in report["error"]
    printed = json.loads(out.decode().strip().splitlines()[-1])
    assert printed["series"] == report["series"] and printed["error"] == report["error"]
    unfinished = [s for s in report["series"] if s["status"] == "failed"]
    done = [s for s in report["series"] if s["status"] == "ready"]
    assert unfinished and done and len(report["series"]) == 20
    assert all("interrupted" in s["error"] for s in unfinished)
    for s in report["series"]:
        got = stored(sync_redis, key_of(key_template, s["symbol"], s["timeframe"]), s["symbol"],
                     s["timeframe"])  # fmt: skip
        assert len(got) == (60 if s["status"] == "ready" else 0), s
