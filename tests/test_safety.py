"""Issue 15, items 1–13: data safety, hangs and limits under a hostile API and a sick Redis.

The upstream here is a small hostile aiohttp server (or the real emulator), Redis
is real (the session's, or a private ``redis-server`` where it must be
configured, restarted or frozen). Each test reproduces a defect found by hand.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis
from aiohttp import web
from conftest import Handler, RedisServer, serve

from livermore_nb import store as store_module
from livermore_nb.backfill import BackfillConfig, backfill
from livermore_nb.candles import Candle
from livermore_nb.cli import build_parser, config_from_args
from livermore_nb.demo import backfill_offline, emulator_redis_url, ensure_offline_cache
from livermore_nb.emulator import TestKey
from livermore_nb.errors import EXIT_AUTH, EXIT_NOT_READY, EXIT_OK, ConfigError, StoreError
from livermore_nb.ratelimit import RetryPolicy
from livermore_nb.startup import notebook_path
from livermore_nb.store import CandleStore, connect, resolve_redis_url
from livermore_nb.timeframes import get_timeframe

H = 3600
QUICK = RetryPolicy(attempts=3, backoff_initial_s=0.01, backoff_max_s=0.01, jitter_s=0)


def rows(request: web.Request, n: int = 5, price: float = 100.0) -> list[dict[str, str]]:
    """``n`` valid hourly API candles (strings, newest first) ending before the request's end."""
    end = int(request.query["end"]) // H * H
    return [
        {"start": str(end - i * H), "low": str(price * 0.95), "high": str(price * 1.2),
         "open": str(price), "close": str(price * 1.1), "volume": "3.5"}
        for i in range(1, n + 1)
    ]  # fmt: skip


def config(redis_url: str, key_template: str, **overrides: Any) -> BackfillConfig:
    """A small 1h run: 5 candles wanted and required, quick retries."""
    options: dict[str, Any] = {
        "symbols": ("AAA-USD",), "timeframes": ("1h",), "candles": 5, "min_candles": 5,
        "rate": 500, "redis_url": redis_url, "key_template": key_template, "retry": QUICK,
    }  # fmt: skip
    return BackfillConfig(**{**options, **overrides})


def stored_closes(client: redis.Redis, key_template: str, symbol: str = "AAA-USD") -> list[float]:
    """The close of every member of one 1h series, oldest first."""
    key = key_template.format(user_id=1, exchange_id=1, symbol=symbol, timeframe="1h")
    return [orjson.loads(m)["close"] for m in client.zrange(key, 0, -1)]


# ------------------------------------------------ 3. conflicting duplicates in one response


async def test_conflicting_duplicate_timestamps_reject_the_page(
    redis_url: str, key_template: str, sync_redis: redis.Redis
) -> None:
    async def handler(request: web.Request) -> web.Response:
        page = rows(request)
        twin = {**page[2], "close": str(float(page[2]["close"]) * 2), "high": "500"}
        return web.json_response({"candles": [*page[:3], twin, *page[3:]]})

    async with serve(handler) as url:
        report = await backfill(config(redis_url, key_template), env={"COINBASE_API_URL": url})
    (series,) = report.series
    assert series.status == "failed" and "two different candles" in (series.error or "")
    assert stored_closes(sync_redis, key_template) == []


async def test_identical_duplicate_timestamps_are_accepted_once(
    redis_url: str, key_template: str, sync_redis: redis.Redis
) -> None:
    async def handler(request: web.Request) -> web.Response:
        page = rows(request)
        return web.json_response({"candles": [*page[:3], dict(page[2]), *page[3:]]})

    async with serve(handler) as url:
        report = await backfill(config(redis_url, key_template), env={"COINBASE_API_URL": url})
    assert report.ready, report.to_dict()
    assert len(stored_closes(sync_redis, key_template)) == 5


# ------------------------------------------------ 4. redirects off the API host


async def test_a_redirect_to_another_host_is_not_followed(
    redis_url: str, key_template: str, sync_redis: redis.Redis
) -> None:
    evil_hits = 0

    async def evil(request: web.Request) -> web.Response:
        nonlocal evil_hits
        evil_hits += 1
        return web.json_response({"candles": rows(request, price=100_000.0)})

    async with serve(evil) as evil_url:

        async def redirecting(request: web.Request) -> web.Response:
            raise web.HTTPFound(evil_url + request.path_qs)

        async with serve(redirecting) as url:
            report = await backfill(config(redis_url, key_template), env={"COINBASE_API_URL": url})
    (series,) = report.series
    assert series.status == "failed" and "redirect refused" in (series.error or "")
    assert evil_hits == 0
    assert stored_closes(sync_redis, key_template) == []


# ------------------------------------------------ 12. response size bound


async def test_a_gzip_bomb_is_rejected_as_malformed_without_reading_it_whole(
    redis_url: str, key_template: str, sync_redis: redis.Redis
) -> None:
    # valid JSON (an empty list) of 64 MB once decompressed, 64 kB on the wire
    bomb = gzip.compress(b'{"candles":[' + b" " * (64 << 20) + b"]}", compresslevel=9)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip"},
                            content_type="application/json")  # fmt: skip

    async with serve(handler) as url:
        report = await backfill(config(redis_url, key_template), env={"COINBASE_API_URL": url})
    (series,) = report.series
    assert series.status == "failed" and "larger than" in (series.error or "")


async def test_a_huge_plain_body_is_rejected_and_nothing_is_written(
    redis_url: str, key_template: str, sync_redis: redis.Redis
) -> None:
    async def handler(request: web.Request) -> web.Response:
        body = orjson.dumps({"candles": rows(request)})
        return web.Response(body=body[:-2] + b" " * (8 << 20) + body[-2:],
                            content_type="application/json")  # fmt: skip

    async with serve(handler) as url:
        report = await backfill(config(redis_url, key_template), env={"COINBASE_API_URL": url})
    (series,) = report.series
    assert series.status == "failed" and "larger than" in (series.error or "")
    assert stored_closes(sync_redis, key_template) == []


# ------------------------------------------------ 13. a stray 401 after the key worked


def key_env(url: str, key: TestKey) -> dict[str, str]:
    """Point the client at ``url`` with ``key`` (private endpoint)."""
    return {"COINBASE_API_URL": url, "COINBASE_API_KEY_NAME": key.name,
            "COINBASE_API_PRIVATE_KEY": key.secret}  # fmt: skip


async def test_a_401_after_the_key_worked_is_retried_like_a_429(
    ec_key: TestKey, redis_url: str, key_template: str
) -> None:
    served = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal served
        served += 1
        if served == 2:
            return web.json_response({"error": "UNAUTHENTICATED", "message": "Unauthorized"},
                                     status=401)  # fmt: skip
        return web.json_response({"candles": rows(request)})

    run = config(redis_url, key_template, symbols=("AAA-USD", "BBB-USD"), concurrency=1)
    async with serve(handler) as url:
        report = await backfill(run, env=key_env(url, ec_key))
    assert report.exit_code == EXIT_OK, report.to_dict()
    assert report.rate_limited == 1 and report.retries == 1


async def test_a_401_on_first_use_still_means_the_key_is_rejected(
    ec_key: TestKey, redis_url: str, key_template: str
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"message": "Unauthorized"}, status=401)

    async with serve(handler) as url:
        report = await backfill(config(redis_url, key_template), env=key_env(url, ec_key))
    assert report.exit_code == EXIT_AUTH and "rejected the API key" in (report.error or "")


# ------------------------------------------------ 9. Retry-After capped, logged, budgeted


def always_429(retry_after: str) -> Handler:
    """A handler that answers every request 429 with this Retry-After."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"message": "slow down"}, status=429,
                                 headers={"Retry-After": retry_after})  # fmt: skip

    return handler


@pytest.mark.parametrize("retry_after", ["3600", "inf", "1e308"])
async def test_retry_after_is_capped_and_the_pause_is_logged(
    retry_after: str, redis_url: str, key_template: str, caplog: pytest.LogCaptureFixture
) -> None:
    policy = RetryPolicy(attempts=3, backoff_initial_s=0.01, backoff_max_s=0.01, jitter_s=0,
                         max_cool_down_s=0.2)  # fmt: skip
    caplog.set_level(logging.WARNING, logger="livermore_nb.ratelimit")
    async with serve(always_429(retry_after)) as url:
        report = await asyncio.wait_for(
            backfill(config(redis_url, key_template, retry=policy), env={"COINBASE_API_URL": url}),
            timeout=20,
        )
    (series,) = report.series
    assert series.status == "failed" and "HTTP 429" in (series.error or "")
    assert report.rate_limited == 3
    assert "every worker pauses 0.2 s" in caplog.text


async def test_a_series_gives_up_after_its_time_budget(redis_url: str, key_template: str) -> None:
    policy = RetryPolicy(attempts=10_000, backoff_initial_s=0.01, backoff_max_s=0.01, jitter_s=0,
                         cool_down_s=0.05, give_up_after_s=0.5)  # fmt: skip
    async with serve(always_429("0.05")) as url:
        started = time.monotonic()
        report = await asyncio.wait_for(
            backfill(config(redis_url, key_template, retry=policy), env={"COINBASE_API_URL": url}),
            timeout=20,
        )
    assert time.monotonic() - started < 5
    assert report.series[0].status == "failed" and report.exit_code == EXIT_NOT_READY


def test_retry_policy_rejects_unbounded_pauses() -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(max_cool_down_s=float("inf"))


# ------------------------------------------------ 1. maxmemory


T0_MS = 1_700_000_000_000 // (H * 1000) * H * 1000


def hourly(n: int, close: float = 100.0, step: int = 1) -> list[Candle]:
    """``n`` valid 1h candles from ``T0_MS``, oldest first, every ``step`` hours."""
    return [
        Candle(T0_MS + i * step * H * 1000, close, close * 1.1, close * 0.9, close, 1.0)
        for i in range(n)
    ]


async def test_over_maxmemory_a_write_is_refused_whole_and_the_run_stops(
    redis_server: RedisServer,
) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)  # every server is over one byte: Redis is "full"

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"candles": rows(request)})

    async with serve(handler) as url:
        report = await backfill(
            config(redis_server.url, "t:{symbol}:{timeframe}", symbols=("AAA-USD", "BBB-USD")),
            env={"COINBASE_API_URL": url},
        )
    assert report.exit_code == 4 and not report.ready
    assert "out of memory" in (report.error or "")
    assert all(s.status == "failed" and "out of memory" in (s.error or "") for s in report.series)
    assert admin.dbsize() == 0
    admin.close()


# ------------------------------------------------ 2. a full rewrite replaces its span


@pytest.fixture
async def store(redis_url: str, key_template: str) -> AsyncIterator[CandleStore]:
    """A CandleStore on this test's key namespace."""
    candle_store = CandleStore(connect(redis_url), key_template=key_template)
    yield candle_store
    await candle_store.client.aclose()


async def test_a_full_rewrite_leaves_no_older_candle_in_the_gaps_of_the_new_fetch(
    store: CandleStore, key_template: str, sync_redis: redis.Redis
) -> None:
    tf = get_timeframe("1h")
    await store.write("AAA-USD", tf, hourly(12, close=100.0))
    shifted = [c._replace(timestamp=c.timestamp + 2 * H * 1000) for c in hourly(4, 200.0, step=2)]
    info = await store.write("AAA-USD", tf, shifted, replace=True)  # hours 2, 4, 6, 8
    # hours 0, 1 (before the span) and 9, 10, 11 (after it) stay; 3, 5, 7 are gone
    closes = stored_closes(sync_redis, key_template)
    assert closes == [100.0, 100.0, 200.0, 200.0, 200.0, 200.0, 100.0, 100.0, 100.0]
    assert info.count == 9


async def test_an_incremental_write_keeps_the_members_between_its_candles(
    store: CandleStore, key_template: str, sync_redis: redis.Redis
) -> None:
    tf = get_timeframe("1h")
    await store.write("AAA-USD", tf, hourly(6, close=100.0))
    await store.write("AAA-USD", tf, hourly(3, close=200.0, step=2))
    assert stored_closes(sync_redis, key_template) == [200.0, 100.0, 200.0, 100.0, 200.0, 100.0]


# ------------------------------------------------ 8. bounds checked before the first write


@pytest.mark.parametrize("option", [{"ttl": 9223372036854775807}, {"keep": 10**12}])
def test_out_of_range_ttl_or_keep_is_a_config_error(option: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        BackfillConfig(symbols=("BTC-USD",), **option)


@pytest.mark.parametrize("option", [{"ttl": 9223372036854775807}, {"keep": 10**12}])
async def test_a_write_with_bad_arguments_changes_nothing(
    option: dict[str, int], store: CandleStore, key_template: str, sync_redis: redis.Redis
) -> None:
    tf = get_timeframe("1h")
    await store.write("AAA-USD", tf, hourly(3, close=100.0))
    bad = CandleStore(store.client, key_template=key_template, **option)
    with pytest.raises(StoreError):
        await bad.write("AAA-USD", tf, hourly(6, close=200.0))
    assert stored_closes(sync_redis, key_template) == [100.0, 100.0, 100.0]


# ------------------------------------------------ 11. a hung Redis


async def test_a_hung_redis_stops_the_run_after_the_socket_timeout(
    redis_server: RedisServer,
) -> None:
    assert redis_server.proc is not None
    pid = redis_server.proc.pid
    served = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal served
        served += 1
        if served == 3:  # Redis freezes while the third series is on its way
            os.kill(pid, signal.SIGSTOP)
        return web.json_response({"candles": rows(request)})

    symbols = ("AAA-USD", "BBB-USD", "CCC-USD", "DDD-USD")
    run = config(redis_server.url, "t:{symbol}:{timeframe}", symbols=symbols, concurrency=1,
                 redis_timeout_s=0.5)  # fmt: skip
    try:
        async with serve(handler) as url:
            started = time.monotonic()
            report = await asyncio.wait_for(backfill(run, env={"COINBASE_API_URL": url}), 30)
            elapsed = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert report.exit_code == 4 and "did not answer" in (report.error or "")
    assert elapsed < 5
    assert [s.status for s in report.series] == ["ready", "ready", "failed", "failed"]


# ------------------------------------------------ 6. the gate re-reads Redis at the end


async def test_a_redis_restarted_without_persistence_fails_the_gate(tmp_path: Any) -> None:
    server = RedisServer(tmp_path, persist=False).start()
    served = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal served
        served += 1
        if served == 3:  # two series are written; then Redis restarts empty
            server.kill()
            server.start()
        return web.json_response({"candles": rows(request)})

    symbols = ("AAA-USD", "BBB-USD", "CCC-USD", "DDD-USD")
    run = config(server.url, "t:{symbol}:{timeframe}", symbols=symbols, concurrency=1)
    try:
        async with serve(handler) as url:
            report = await backfill(run, env={"COINBASE_API_URL": url})
    finally:
        server.kill()
    assert not report.ready and report.exit_code == EXIT_NOT_READY
    statuses = [(s.status, s.candles) for s in report.series]
    assert statuses == [("short", 0), ("short", 0), ("ready", 5), ("ready", 5)]


# ------------------------------------------------ 7. the gate requires the newest candle


def _hours_before(now: float, n: int, newest_age_h: int, skip: int = 1) -> list[Candle]:
    """``n`` 1h candles, every ``skip`` hours, the newest opening ``newest_age_h`` h before now."""
    newest = (int(now) // H - newest_age_h) * H * 1000
    return sorted(
        Candle(newest - i * skip * H * 1000, 100.0, 110.0, 90.0, 100.0, 1.0) for i in range(n)
    )


async def test_a_series_whose_newest_candles_are_missing_is_stale_not_ready(
    store: CandleStore, redis_url: str, key_template: str
) -> None:
    now, tf = time.time(), get_timeframe("1h")
    await store.write("OLD-USD", tf, _hours_before(now, 5, newest_age_h=4))
    await store.write("NEW-USD", tf, _hours_before(now, 5, newest_age_h=1))

    async def nothing_new(request: web.Request) -> web.Response:
        return web.json_response({"candles": []})  # the API has nothing newer (or lies)

    run = config(redis_url, key_template, symbols=("OLD-USD", "NEW-USD"))
    async with serve(nothing_new) as url:
        report = await backfill(run, env={"COINBASE_API_URL": url}, clock=lambda: now)
    old, new = report.series
    assert old.status == "short" and (old.error or "").startswith("stale:") and old.candles == 5
    assert new.status == "ready"
    assert not report.ready and report.exit_code == EXIT_NOT_READY


async def test_an_illiquid_products_normal_quiet_spell_is_not_stale(
    store: CandleStore, redis_url: str, key_template: str
) -> None:
    now = time.time()  # a candle every 3 hours: 2-hour gaps are normal; 4 hours ago is fine
    await store.write("ILL-USD", get_timeframe("1h"), _hours_before(now, 5, newest_age_h=4, skip=3))

    async def nothing_new(request: web.Request) -> web.Response:
        return web.json_response({"candles": []})

    run = config(redis_url, key_template, symbols=("ILL-USD",))
    async with serve(nothing_new) as url:
        report = await backfill(run, env={"COINBASE_API_URL": url}, clock=lambda: now)
    assert report.ready, report.to_dict()


# ------------------------------------------------ 10. a run-wide deadline


async def test_the_deadline_ends_a_permanently_rate_limited_run_with_exit_3(
    redis_url: str, key_template: str
) -> None:
    policy = RetryPolicy(attempts=10_000, backoff_initial_s=0.01, backoff_max_s=0.01, jitter_s=0,
                         cool_down_s=0.05, give_up_after_s=3600)  # fmt: skip
    run = config(redis_url, key_template, retry=policy, deadline_s=1.0,
                 symbols=("AAA-USD", "BBB-USD"))  # fmt: skip
    async with serve(always_429("0.05")) as url:
        started = time.monotonic()
        report = await asyncio.wait_for(backfill(run, env={"COINBASE_API_URL": url}), 30)
    assert time.monotonic() - started < 5
    assert report.exit_code == EXIT_NOT_READY and "deadline of 1 s" in (report.error or "")
    assert all(s.status == "failed" and "deadline" in (s.error or "") for s in report.series)


def test_the_deadline_defaults_to_five_minutes_and_zero_means_none() -> None:
    assert BackfillConfig(symbols=("BTC-USD",)).deadline_s == 300
    assert BackfillConfig(symbols=("BTC-USD",), deadline_s=0).deadline_s == 0
    with pytest.raises(ConfigError):
        BackfillConfig(symbols=("BTC-USD",), deadline_s=-1)


# ------------------------------------------------ 5. emulator candles never reach $REDIS_URL


@pytest.fixture
def embedded_db(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A private embedded Redis file for this test (shut down afterwards)."""
    path = tmp_path / "embedded.db"
    monkeypatch.setenv("LIVERMORE_REDIS_DB", str(path))
    yield path
    server = store_module._embedded.pop(path, None)
    if server is not None:
        server.shutdown()


async def test_emulator_runs_write_the_embedded_redis_not_redis_url(
    redis_server: RedisServer, embedded_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)  # "production"
    run = BackfillConfig(symbols=("BTC-USD",), timeframes=("1h",), candles=20, min_candles=20)
    report = await backfill_offline(run)
    assert report.ready
    assert await ensure_offline_cache(run) is None  # it finds the embedded cache filled
    with redis.Redis.from_url(redis_server.url) as production:
        assert production.dbsize() == 0
    with redis.Redis.from_url(emulator_redis_url()) as embedded:
        assert embedded.exists("candles:1:1:BTC-USD:1h")


async def test_an_emulator_run_writes_a_redis_named_for_it(
    redis_server: RedisServer, embedded_db: Any
) -> None:
    run = BackfillConfig(symbols=("BTC-USD",), timeframes=("1h",), candles=20, min_candles=20,
                         redis_url=redis_server.url)  # fmt: skip
    assert (await backfill_offline(run)).ready
    with redis.Redis.from_url(redis_server.url) as named:
        assert named.exists("candles:1:1:BTC-USD:1h")


@pytest.mark.slow
def test_the_coverage_notebook_with_the_emulator_leaves_redis_url_alone(
    redis_server: RedisServer, embedded_db: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    import papermill as pm

    monkeypatch.setenv("REDIS_URL", redis_server.url)
    pm.execute_notebook(
        str(notebook_path("coverage.ipynb")), str(tmp_path / "out.ipynb"),
        parameters={"symbols": "BTC-USD", "timeframes": "1h", "use_emulator": True},
        kernel_name="python3", progress_bar=False, cwd=str(tmp_path),
    )  # fmt: skip
    with redis.Redis.from_url(redis_server.url) as production:
        assert production.dbsize() == 0


@pytest.mark.slow
def test_the_backfill_notebook_with_the_emulator_ignores_the_config_files_redis(
    redis_server: RedisServer, embedded_db: Any, tmp_path: Any
) -> None:
    import papermill as pm

    config_file = tmp_path / "livermore.toml"  # production's file, as startup reads it
    config_file.write_text(f'redis_url = "{redis_server.url}"\nsymbols = "BTC-USD"\n')
    pm.execute_notebook(
        str(notebook_path()), str(tmp_path / "out.ipynb"),
        parameters={"config_file": str(config_file), "timeframes": "1h", "use_emulator": True},
        kernel_name="python3", progress_bar=False, cwd=str(tmp_path),
    )  # fmt: skip
    with redis.Redis.from_url(redis_server.url) as production:
        assert production.dbsize() == 0
    with redis.Redis.from_url(emulator_redis_url()) as embedded:
        assert embedded.zcard("candles:1:1:BTC-USD:1h") == 300


def test_an_empty_redis_url_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "")
    with pytest.raises(ConfigError, match="empty"):
        resolve_redis_url(None)
    with pytest.raises(ConfigError, match="empty"):
        resolve_redis_url(" ")


def test_the_cli_passes_deadline_and_redis_timeout_to_the_config() -> None:
    args = build_parser().parse_args(
        ["backfill", "--symbols", "BTC-USD", "--deadline", "0", "--redis-timeout", "2.5"]
    )
    run = config_from_args(args)
    assert run.deadline_s == 0 and run.redis_timeout_s == 2.5
    defaults = config_from_args(build_parser().parse_args(["backfill", "--symbols", "BTC-USD"]))
    assert defaults.deadline_s == 300 and defaults.redis_timeout_s == 10
