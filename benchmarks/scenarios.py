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

from livermore_nb.backfill import BackfillConfig, BackfillReport, backfill
from livermore_nb.memory import Capabilities
from livermore_nb.plan import count_pages, fetch_span, plan, planned_requests, target_window
from livermore_nb.store import SeriesInfo
from livermore_nb.timeframes import get_timeframe, parse_timeframes

from .harness import KEY_PREFIX, KEY_TEMPLATE, BenchKey, BenchRedis, EmulatorProcess, client_env

Row = dict[str, Any]
EMPTY = SeriesInfo(0, None, None)
TODAY = Capabilities(four_hour=True, max_buckets=350)
"""The API as Coinbase's current reference describes it (and the emulator's default)."""


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
            state_prefix=f"{KEY_PREFIX}:state",  # cleared with the candles: every run learns
            **options,
        )

    @property
    def series(self) -> int:
        """Series written."""
        return len(self.symbols) * len(self.timeframes)


def minimum_requests(config: BackfillConfig, now: float, caps: Capabilities = TODAY) -> int:
    """Requests a cold start needs when no bucket is empty: the planner's own count."""
    tasks = plan(
        config.symbols, parse_timeframes(config.timeframes),
        lambda _, tf: target_window(tf, EMPTY, now, config), now, caps,
        page_buckets=caps.page_buckets(config.page_size),
    )  # fmt: skip
    return planned_requests(tasks, caps.page_buckets(config.page_size))


def old_plan_requests(config: BackfillConfig, now: float) -> int:
    """What the plan before issue 13 sent when no bucket is empty: 4h on 1h, pages of 300."""
    by_source: dict[str, list[Any]] = {}
    for tf in parse_timeframes(config.timeframes):
        by_source.setdefault(tf.source, []).append(target_window(tf, EMPTY, now, config))
    per_symbol = sum(
        count_pages(get_timeframe(s), fetch_span(get_timeframe(s), windows, now), 300)
        for s, windows in by_source.items()
    )
    return per_symbol * len(config.symbols)


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

    The package's own planner on the windows the restart misses (each warm
    window fits one page, so no page back).
    """
    infos = {
        (symbol, tf.name): SeriesInfo(
            config.candles, 0, (tf.floor(now - downtime_s) - tf.seconds) * 1000
        )
        for symbol in config.symbols
        for tf in map(get_timeframe, config.timeframes)
    }
    tasks = plan(
        config.symbols, parse_timeframes(config.timeframes),
        lambda s, tf: target_window(tf, infos[(s, tf.name)], now, config), now, TODAY,
        page_buckets=TODAY.page_buckets(config.page_size),
    )  # fmt: skip
    return planned_requests(tasks, TODAY.page_buckets(config.page_size))


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
    caps: Capabilities = TODAY,
) -> Row:
    """One cold start, nothing in Redis and nothing learnt; wall time against the floor."""
    store.clear()
    emulator.reset()
    config = workload.config(store.url, full=True, rate=rate)
    floor_requests = minimum_requests(config, time.time(), caps)
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
        "_refused": stats["by_status"].get("400", 0),
        "_old_plan": old_plan_requests(config, time.time()),
        "_api": report.api,
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
        bad = [f"{s.symbol} {s.timeframe}: {s.error}" for s in filled.series if s.status != "ready"]
        raise RuntimeError(f"warm-restart pre-fill failed: {filled.error or '; '.join(bad[:5])}")
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
