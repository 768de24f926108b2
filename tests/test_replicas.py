"""Many replicas, one key, one Redis: `livermore-nb backfill` processes started together.

Each replica is a real CLI process; they share one emulator (30 requests/s per
key, like Coinbase) and one private redis-server. The emulator's own request
log is the evidence for the rate; its ``candles()`` is the truth Redis is
compared with.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import RedisServer

from livermore_nb.backfill import BackfillConfig, backfill
from livermore_nb.cli import build_parser, config_from_args
from livermore_nb.emulator import Emulator, EmulatorConfig, EmulatorThread, TestKey
from livermore_nb.errors import EXIT_OK, ConfigError
from livermore_nb.timeframes import get_timeframe

SYMBOLS = tuple(f"SYN{i:04d}-USD" for i in range(1, 41))
TIMEFRAMES = ("5m", "1h", "1d")
CANDLES = 100
API_LIMIT = 30


def max_in_any_second(times: list[float]) -> int:
    """Most arrivals within any one second (a half-open sliding window)."""
    times, best, lo = sorted(times), 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@pytest.fixture
def api(ec_key: TestKey) -> Iterator[EmulatorThread]:
    """An emulator limiting the key to 30 requests/s, in its own thread and loop."""
    config = EmulatorConfig(keys={ec_key.name: ec_key.public_key}, latency_ms=20)
    with EmulatorThread(config) as running:
        yield running


def replica(
    api: EmulatorThread,
    ec_key: TestKey,
    server: RedisServer,
    namespace: str,
    report: Path,
    *extra: str,
    symbols: tuple[str, ...] = SYMBOLS,
) -> subprocess.Popen[bytes]:
    """Start one `livermore-nb backfill` process writing under ``namespace``."""
    env = {**os.environ, "COINBASE_API_URL": api.url, "COINBASE_API_KEY_NAME": ec_key.name}
    env["COINBASE_API_PRIVATE_KEY"] = ec_key.secret
    env.pop("REDIS_URL", None)
    args = [sys.executable, "-m", "livermore_nb.cli", "backfill", "--symbols", ",".join(symbols)]
    args += ["--timeframes", ",".join(TIMEFRAMES), "--candles", str(CANDLES)]
    args += ["--min-candles", str(CANDLES), "--redis-url", server.url, "--report", str(report)]
    args += ["--key-template", namespace + ":{symbol}:{timeframe}", "--log-format", "json", *extra]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[bytes], report: Path, timeout: float = 120) -> dict[str, Any]:
    """Wait for a replica; its report (after checking it exited as a ready run does)."""
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == EXIT_OK, err.decode()[-2000:]
    assert b"Traceback" not in err
    return dict(json.loads(report.read_text()))


def rows(report: dict[str, Any]) -> list[tuple[Any, ...]]:
    """What a report says Redis holds, per series (the source aside)."""
    keys = ("symbol", "timeframe", "candles", "first", "last", "status")
    return sorted(tuple(s[k] for k in keys) for s in report["series"])


def assert_redis_exact(client: redis.Redis, api: EmulatorThread, namespace: str) -> None:
    """Every series holds exactly the emulator's newest CANDLES candles up to its last one."""
    for symbol in SYMBOLS:
        for timeframe in TIMEFRAMES:
            tf = get_timeframe(timeframe)
            members = client.zrange(f"{namespace}:{symbol}:{timeframe}", 0, -1, withscores=True)
            scores = [int(score) // 1000 for _, score in members]
            assert len(scores) == CANDLES == len(set(scores)), (symbol, timeframe)
            served = api.emulator.candles(
                symbol, tf.granularity or "", scores[0], scores[-1] + tf.seconds
            )
            want = sorted(
                (int(c["start"]), *(float(c[k]) for k in ("open", "high", "low", "close")))
                for c in served
            )
            got = [
                (doc["timestamp"] // 1000, doc["open"], doc["high"], doc["low"], doc["close"])
                for doc in (json.loads(m) for m, _ in members)
            ]
            assert got == want, (symbol, timeframe)


def test_five_replicas_share_one_budget_and_fetch_each_series_once(
    api: EmulatorThread, ec_key: TestKey, redis_server: RedisServer, tmp_path: Path
) -> None:
    alone_report = tmp_path / "alone.json"
    alone = finish(replica(api, ec_key, redis_server, "alone", alone_report), alone_report)
    one_process = api.emulator.stats.total
    api.emulator.reset_stats()

    paths = [tmp_path / f"replica{i}.json" for i in range(5)]
    procs = [replica(api, ec_key, redis_server, "shared", p) for p in paths]
    reports = [finish(proc, path) for proc, path in zip(procs, paths, strict=True)]

    stats = api.emulator.stats
    assert stats.rate_limited == 0 and sum(r["rate_limited"] for r in reports) == 0
    assert max_in_any_second(stats.timestamps) <= API_LIMIT
    assert stats.total <= 1.05 * one_process, (stats.total, one_process)
    assert all(rows(r) == rows(reports[0]) for r in reports)
    assert [s[5] for s in rows(reports[0])] == [s[5] for s in rows(alone)]  # all ready
    sources = [s["source"] for r in reports for s in r["series"]]
    assert sources.count("fetched") <= len(SYMBOLS) * len(TIMEFRAMES) * 1.05
    assert sum(r["from_peer"] for r in reports) > 0
    with redis.Redis.from_url(redis_server.url) as client:
        assert_redis_exact(client, api, "shared")
        assert not list(client.scan_iter(match="*:lease"))  # every lease released


def test_replicas_without_a_shared_budget_trip_the_limit(
    api: EmulatorThread, ec_key: TestKey, redis_server: RedisServer, tmp_path: Path
) -> None:
    """The contrast that shows the test above can fail: each process paced alone."""
    paths = [tmp_path / f"replica{i}.json" for i in range(3)]
    procs = [replica(api, ec_key, redis_server, "own", p, "--shared-rate", "off") for p in paths]
    for proc in procs:
        proc.communicate(timeout=180)
    assert api.emulator.stats.rate_limited > 0
    assert api.emulator.stats.total > len(SYMBOLS) * len(TIMEFRAMES) * 2


def test_a_killed_replicas_series_are_taken_over_after_its_lease(
    api: EmulatorThread, ec_key: TestKey, redis_server: RedisServer, tmp_path: Path
) -> None:
    lease_s = 1.0
    started = time.monotonic()
    finish(replica(api, ec_key, redis_server, "alone", tmp_path / "a.json"), tmp_path / "a.json")
    one_process_s = time.monotonic() - started  # the whole fetch, interpreter start-up included
    victim = replica(api, ec_key, redis_server, "kill", tmp_path / "victim.json",
                     "--lease", str(lease_s), "--rate", "4")  # fmt: skip
    assert victim.stderr is not None
    client = redis.Redis.from_url(redis_server.url)
    for line in victim.stderr:  # wait until it holds leases mid-run
        event = json.loads(line)
        if event.get("event") == "backfill_progress" and event["done"] >= 3:
            break
    assert list(client.scan_iter(match="*:lease"))
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    started = time.monotonic()
    paths = [tmp_path / f"survivor{i}.json" for i in range(2)]
    procs = [replica(api, ec_key, redis_server, "kill", p, "--lease", str(lease_s)) for p in paths]
    reports = [finish(proc, path) for proc, path in zip(procs, paths, strict=True)]
    elapsed = time.monotonic() - started
    # two interpreters start on this machine's cores instead of one: a little slack for that
    assert elapsed <= lease_s + 1.25 * one_process_s, (elapsed, one_process_s)
    assert all(all(s["status"] == "ready" for s in r["series"]) for r in reports)
    assert_redis_exact(client, api, "kill")
    assert not list(client.scan_iter(match="*:lease"))
    client.close()


async def test_two_runs_in_one_process_fetch_each_series_once_even_after_a_flush(
    emulator: Emulator, key_env: dict[str, str], redis_url: str, key_template: str
) -> None:
    """The same coordination in-process: two runs, one Redis, one emulator."""
    config = BackfillConfig(symbols=SYMBOLS[:8], timeframes=("5m", "1h", "4h"), candles=CANDLES,
                            min_candles=CANDLES, redis_url=redis_url, key_template=key_template,
                            shared_rate="on")  # fmt: skip
    await backfill(config, env=key_env)  # leaves done markers behind, then Redis loses it all
    with redis.Redis.from_url(redis_url) as client:
        client.delete(*client.scan_iter(match=key_template.split("{")[0] + "*"))
    emulator.reset_stats()
    first, second = await asyncio.gather(*(backfill(config, env=key_env) for _ in range(2)))
    assert first.ready and second.ready
    # one run's requests: 8 × (one 5m page + two 1h pages for the 400 hours of 100 4h candles)
    assert emulator.stats.total == 24 == first.requests + second.requests
    assert first.from_peer + second.from_peer == 24  # every series: fetched by one, read by one
    assert {s.source for s in first.series + second.series} == {"fetched", "peer"}
    assert [(s.symbol, s.timeframe, s.candles, s.last) for s in first.series] == [
        (s.symbol, s.timeframe, s.candles, s.last) for s in second.series
    ]


def test_the_cli_passes_shared_rate_and_lease_to_the_config() -> None:
    args = build_parser().parse_args(
        ["backfill", "--symbols", "BTC-USD", "--shared-rate", "off", "--lease", "2.5"]
    )
    config = config_from_args(args)
    assert (config.shared_rate, config.lease_s) == ("off", 2.5)
    assert BackfillConfig(symbols=("BTC-USD",)).shared_rate == "auto"
    with pytest.raises(ConfigError, match="--lease"):
        BackfillConfig(symbols=("BTC-USD",), lease_s=0)
    with pytest.raises(ConfigError, match="--shared-rate"):
        BackfillConfig(symbols=("BTC-USD",), shared_rate="always")
