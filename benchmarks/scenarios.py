"""The startup scenarios: cold start (at several rates), warm restarts, the public endpoint.

Every number comes from a run against an emulator process: wall time around
``await backfill(...)``, requests and 429s from both the report and the
emulator's own statistics, and the floor from the plan (``minimum_requests``).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any

from livermore_nb.backfill import (
    BackfillConfig,
    BackfillReport,
    backfill,
    fold_warm,
    plan,
    target_window,
)
from livermore_nb.coinbase import page_windows
from livermore_nb.store import SeriesInfo
from livermore_nb.timeframes import get_timeframe

from .harness import KEY_TEMPLATE, BenchKey, BenchRedis, EmulatorProcess, client_env

Row = dict[str, Any]
EMPTY = SeriesInfo(0, None, None)


@dataclass(frozen=True)
class Workload:
    """Symbols × timeframes × candles, as the issue states each scenario."""

    symbols: tuple[str, ...]
    timeframes: tuple[str, ...]
    candles: int

    def config(self, redis_url: str, **options: Any) -> BackfillConfig:
        """A BackfillConfig writing under the benchmark's key prefix."""
        return BackfillConfig(
            symbols=self.symbols,
            timeframes=self.timeframes,
            candles=self.candles,
            min_candles=min(150, self.candles),
            redis_url=redis_url,
            key_template=KEY_TEMPLATE,
            **options,
        )

    @property
    def series(self) -> int:
        """Series written."""
        return len(self.symbols) * len(self.timeframes)


def minimum_requests(config: BackfillConfig, now: float) -> int:
    """Requests a cold start needs when no bucket is empty: the plan's pages, gaps aside."""
    total = 0
    for task in plan(config.symbols, config.timeframes):
        windows = [target_window(tf, EMPTY, now, config) for tf in task.targets]
        start = min(w.start_s for w in windows if w)
        end = max(w.end_s for w in windows if w)
        end = min(end, task.source.floor(now) + task.source.seconds)
        total += len(page_windows(task.source, start, end, config.page_size))
    return total


def expected_warm_requests(config: BackfillConfig, downtime_s: float, moments: int = 1000) -> float:
    """Mean requests of a restart after ``downtime_s`` over seeded moments of a day."""
    rng = random.Random(1)
    return (
        sum(
            restart_requests(config, 86400 * 20_000 + rng.uniform(0, 86400), downtime_s)
            for _ in range(moments)
        )
        / moments
    )


def restart_requests(config: BackfillConfig, now: float, downtime_s: float) -> int:
    """Requests a restart at ``now`` plans when the cache was current ``downtime_s`` before.

    The package's own planning (``fold_warm``): one request per task with a
    window (each fits one page).
    """
    infos = {
        (symbol, tf.name): SeriesInfo(
            config.candles, 0, (tf.floor(now - downtime_s) - tf.seconds) * 1000
        )
        for symbol in config.symbols
        for tf in map(get_timeframe, config.timeframes)
    }
    tasks = fold_warm(plan(config.symbols, config.timeframes), infos, now, config)
    return sum(
        any(target_window(tf, infos[(t.symbol, tf.name)], now, config) for tf in t.targets)
        for t in tasks
    )


async def timed_backfill(config: BackfillConfig, env: dict[str, str], **kw: Any) -> BackfillReport:
    """Run one backfill; the report's ``duration_s`` is replaced by wall time around the call."""
    started = time.perf_counter()
    report = await backfill(config, env=env, **kw)
    report.duration_s = time.perf_counter() - started
    return report


def ready_count(report: BackfillReport) -> str:
    """``ready/total`` series."""
    return f"{sum(s.status == 'ready' for s in report.series)}/{len(report.series)}"


async def cold_start(
    emulator: EmulatorProcess,
    store: BenchRedis,
    key: BenchKey | None,
    workload: Workload,
    *,
    rate: float | None,
    api_limit: float,
    label: str,
) -> Row:
    """One cold start into an empty namespace; wall time against the floor."""
    store.clear()
    emulator.reset()
    config = workload.config(store.url, full=True, rate=rate)
    floor_requests = minimum_requests(config, time.time())
    report = await timed_backfill(config, client_env(emulator.url, key))
    stats = emulator.stats()
    used = config.rate or (25.0 if key else 8.0)
    floor_s = floor_requests / used
    return {
        "scenario": label,
        "rate": f"{used:g}/s",
        "requests": report.requests,
        "min requests": floor_requests,
        "429s": stats["rate_limited"],
        "wall s": round(report.duration_s, 2),
        "floor s": round(floor_s, 2),
        "× floor": round(report.duration_s / floor_s, 3),
        f"floor at {api_limit:g}/s": round(floor_requests / api_limit, 2),
        "ready": ready_count(report),
        "server peak/1s": stats["peak_1s"],
        "_timestamps": stats["timestamps"],
        "_server_total": stats["total"],
    }


@dataclass(frozen=True)
class Restart:
    """One warm restart: its requests, 429s, wall time and whether the gate passed."""

    requests: int
    rate_limited: int
    wall_s: float
    ready: bool


def restart_moments(count: int, seed: int = 7) -> list[float]:
    """``count`` seeded moments in the previous UTC day: the same phases in every run."""
    day = 86400
    start = time.time() // day * day - day
    rng = random.Random(seed)
    return sorted(start + rng.uniform(0, day) for _ in range(count))


async def warm_restart(
    fast: EmulatorProcess,
    emulator: EmulatorProcess,
    store: BenchRedis,
    key: BenchKey,
    workload: Workload,
    *,
    downtime_s: float,
    restart_at: float,
) -> Restart:
    """Fill the cache as of ``restart_at - downtime_s`` (unlimited emulator), restart then.

    Both runs see a clock running at real speed from those past moments, so the
    emulator (which serves everything up to the real now) answers exactly what it
    would have answered then; JWTs always use real time.
    """
    store.clear()
    lag = time.time() - restart_at
    filled = await backfill(
        workload.config(store.url, full=True, rate=10_000),
        env=client_env(fast.url, key),
        clock=lambda: time.time() - lag - downtime_s,
    )
    if not filled.ready:
        raise RuntimeError(f"warm-restart pre-fill failed: {filled.error}")
    emulator.reset()
    report = await timed_backfill(
        workload.config(store.url), client_env(emulator.url, key), clock=lambda: time.time() - lag
    )
    stats = emulator.stats()
    return Restart(report.requests, stats["rate_limited"], report.duration_s, report.ready)


def warm_row(config: BackfillConfig, downtime_s: float, restarts: list[Restart]) -> Row:
    """One row per downtime: requests and wall time over the sampled moments."""
    requests = [r.requests for r in restarts]
    walls = [r.wall_s for r in restarts]
    return {
        "downtime": human_duration(downtime_s),
        "restarts": len(restarts),
        "requests mean": round(sum(requests) / len(requests), 1),
        "requests min–max": f"{min(requests)}–{max(requests)}",
        "expected requests": round(expected_warm_requests(config, downtime_s), 1),
        "429s": sum(r.rate_limited for r in restarts),
        "wall s mean": round(sum(walls) / len(walls), 2),
        "wall s min–max": f"{min(walls):.2f}–{max(walls):.2f}",
        "ready": f"{sum(r.ready for r in restarts)}/{len(restarts)}",
    }


def human_duration(seconds: float) -> str:
    """``1 min``, ``10 min``, ``2 h``."""
    if seconds >= 3600 and math.isclose(seconds % 3600, 0):
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min"
