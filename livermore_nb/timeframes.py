"""Timeframe names, durations, Coinbase granularities and which granularities tile which.

Every granularity Coinbase serves except ``FOUR_HOUR`` is served in every API
regime; ``FOUR_HOUR`` is listed by the current reference (2026-07) but answered
with a 400 by older regimes, where ``4h`` is built from finer candles
(``source`` names the one the oldest plan used: ``1h``). Which source a run
uses is the planner's choice (``plan.py``) among :func:`tiling`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from .errors import ConfigError

ISO_UTC = "%Y-%m-%dT%H:%M:%SZ"
"""The one date style of tables, JSON, CSV and reports: ISO-8601 UTC to the second."""


@dataclass(frozen=True, slots=True)
class Timeframe:
    """One candle timeframe as the indicator service names it."""

    name: str
    seconds: int
    granularity: str
    """Coinbase ``granularity`` value (``FOUR_HOUR`` is not served in every regime)."""
    source: str
    """Timeframe that builds this one where the API does not serve it (itself if native)."""

    @property
    def ms(self) -> int:
        """Duration in milliseconds (Redis scores are milliseconds)."""
        return self.seconds * 1000

    @property
    def native(self) -> bool:
        """True when Coinbase serves this timeframe directly in every API regime."""
        return self.source == self.name

    def floor(self, epoch_s: float) -> int:
        """Start (UNIX seconds) of the bucket holding ``epoch_s``; buckets align to UTC."""
        return int(epoch_s // self.seconds) * self.seconds


TIMEFRAMES: dict[str, Timeframe] = {
    tf.name: tf
    for tf in (
        Timeframe("1m", 60, "ONE_MINUTE", "1m"),
        Timeframe("5m", 300, "FIVE_MINUTE", "5m"),
        Timeframe("15m", 900, "FIFTEEN_MINUTE", "15m"),
        Timeframe("30m", 1800, "THIRTY_MINUTE", "30m"),
        Timeframe("1h", 3600, "ONE_HOUR", "1h"),
        Timeframe("2h", 7200, "TWO_HOUR", "2h"),
        Timeframe("4h", 14400, "FOUR_HOUR", "1h"),
        Timeframe("6h", 21600, "SIX_HOUR", "6h"),
        Timeframe("1d", 86400, "ONE_DAY", "1d"),
    )
}

GRANULARITIES: dict[str, Timeframe] = {tf.granularity: tf for tf in TIMEFRAMES.values()}
"""Coinbase granularity name → timeframe (``FOUR_HOUR`` included: not every regime serves it)."""

DEFAULT_TIMEFRAMES: tuple[str, ...] = ("5m", "15m", "1h", "4h", "1d")


STALE_PERIODS = 2.0
"""Closed periods a series' newest candle may miss before it is stale (beyond normal gaps)."""


def is_stale(
    age_s: float, period_s: int, *, largest_gap: int = 0, stale_periods: float = STALE_PERIODS
) -> bool:
    """Whether a series whose newest candle closed ``age_s`` ago misses candles it should hold.

    The one staleness rule (coverage and the readiness gate): stale when more
    periods have closed since than ``stale_periods`` and than twice the longest
    run of missing periods inside the series (``largest_gap``), so an illiquid
    product's normal quiet spells are not mistaken for a stale cache.
    """
    return age_s > stale_threshold(largest_gap, stale_periods) * period_s


def stale_threshold(largest_gap: int = 0, stale_periods: float = STALE_PERIODS) -> float:
    """Closed periods after which a series is stale (:func:`is_stale`): its gaps raise the bar."""
    return max(stale_periods, 2 * largest_gap)


def largest_gap(open_times_ms: Sequence[int], period_s: int) -> int:
    """The longest run of missing periods between consecutive open times (sorted, ms)."""
    period_ms = period_s * 1000
    steps = (b - a for a, b in pairwise(open_times_ms))
    return max((step // period_ms - 1 for step in steps), default=0)


def get_timeframe(name: str) -> Timeframe:
    """The timeframe called ``name``; ConfigError listing the valid names otherwise."""
    try:
        return TIMEFRAMES[name]
    except KeyError:
        valid = " ".join(TIMEFRAMES)
        raise ConfigError(f"unknown timeframe {name!r} (valid: {valid})") from None


def parse_timeframes(names: str | Iterable[str]) -> tuple[Timeframe, ...]:
    """Parse ``"5m,15m"`` or a list of names, keeping order and dropping repeats."""
    items = names.split(",") if isinstance(names, str) else list(names)
    cleaned = [n.strip() for n in items if n.strip()]
    if not cleaned:
        raise ConfigError("no timeframes given")
    return tuple(get_timeframe(n) for n in dict.fromkeys(cleaned))


def tiling(tf: Timeframe) -> tuple[Timeframe, ...]:
    """Timeframes whose UTC-aligned buckets tile ``tf``'s exactly, coarsest (``tf``) first.

    A bucket of ``tf`` is the union of whole buckets of any timeframe whose
    length divides ``tf``'s (both align to the epoch), and OHLCV aggregates
    associatively, so any of them can build ``tf``: 4h from 2h, 1h, 30m, …
    """
    found = (s for s in TIMEFRAMES.values() if tf.seconds % s.seconds == 0)
    return tuple(sorted(found, key=lambda s: -s.seconds))
