"""MACD-V (Spiroglou's volatility-normalised MACD), its stages, gaps and warmup analysis.

Definitions (DESIGN.md, "Indicator reference"), on the analysis frame of ``candles.py``:

* ``EMA_n`` is seeded with the SMA of its first ``n`` values (TA-Lib's default), then
  ``ema += (x - ema) * 2 / (n + 1)``; the first value is at bar ``n - 1``.
* ``ATR`` is Wilder's: the same recursion with ``alpha = 1 / atr_period``, seeded with the
  SMA of the first ``atr_period`` true ranges. ``TR = max(H-L, |H-prevC|, |L-prevC|)`` and
  the first bar's TR is ``H-L``. TA-Lib's ``ATR`` instead drops bar 0 (its first value, at
  bar ``atr_period``, averages TR 1..atr_period); ours starts one bar earlier at bar
  ``atr_period - 1``. Both use the same Wilder smoothing: prepend a bar whose close lies
  inside bar 0's range and TA-Lib's ATR equals ours (the tests do exactly that).
* ``MACD-V = (EMA_fast(close) - EMA_slow(close)) / ATR * scale``; a zero ATR (a flat
  market) gives NaN. ``signal`` is the EMA of the finite MACD-V values (seeded once 9
  exist; NaN bars are skipped, not zero-filled); ``histogram = macdv - signal``.

Gaps: the frame holds only periods with trades, and the indicator runs over the rows as
given (as TA-Lib and charting tools do). With ``skip_gaps=True`` the bar after a gap is
treated like a first bar: its TR is ``H-L`` only, because the previous row's close is not
the previous *period's* close. This can only lower the ATR, so ``|MACD-V|`` can only grow;
on illiquid products (XTZ-USD) the jump from the stale close is what keeps the ATR up, so
the default is the safer choice (see ``docs/warmup.md`` and the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from .errors import ConfigError

__all__ = [
    "STAGES",
    "find_gaps",
    "macdv",
    "min_candles_for",
    "stages",
    "untrusted_bars",
    "warmup_errors",
]

STAGES: tuple[str, ...] = (
    "oversold",
    "reversing",
    "rebounding",
    "ranging",
    "rallying",
    "retracing",
    "overbought",
)
"""Stage names, from the most bearish MACD-V band to the most bullish."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Spec:
    """Validated MACD-V parameters (one place for the checks)."""

    fast: int = 12
    slow: int = 26
    atr_period: int = 26
    signal: int = 9
    scale: float = 100.0
    skip_gaps: bool = False
    timeframe_seconds: int | None = None

    def __post_init__(self) -> None:
        for name in ("fast", "slow", "atr_period", "signal"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.fast >= self.slow:
            raise ConfigError(f"fast ({self.fast}) must be shorter than slow ({self.slow})")
        if not np.isfinite(self.scale) or self.scale == 0:
            raise ConfigError(f"scale must be finite and non-zero, got {self.scale!r}")
        if self.timeframe_seconds is not None and self.timeframe_seconds <= 0:
            raise ConfigError(f"timeframe_seconds must be positive, got {self.timeframe_seconds}")


def _ema(x: np.ndarray, period: int, alpha: float) -> np.ndarray:
    """Per column of 2-D ``x``: EMA of its finite values, seeded with the SMA of the first N."""
    if len(x) < period:
        return np.full_like(x, np.nan)
    valid = np.isfinite(x)
    count = np.cumsum(valid, axis=0)
    live = (count >= period) & valid
    cols = np.arange(x.shape[1])
    seed_row = np.argmax(count >= period, axis=0)
    seed = np.cumsum(np.where(valid, x, 0.0), axis=0)[seed_row, cols] / period
    feed = np.where(live, x, np.nan)
    feed[seed_row, cols] = np.where(count[-1] >= period, seed, np.nan)
    # pandas' Cython ewm runs the recursion per column (adjust=False: y = (1-a)y + a x).
    out = pd.DataFrame(feed).ewm(alpha=alpha, adjust=False, ignore_na=True).mean()
    return np.where(live, out.to_numpy(), np.nan)


def _indicator(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, fresh: np.ndarray, spec: _Spec
) -> tuple[np.ndarray, np.ndarray]:
    """MACD-V and signal for 2-D (bars × series) arrays; ``fresh`` bars take TR = H-L."""
    prev = np.roll(close, 1, axis=0)
    tr = np.maximum(high - low, np.maximum(np.abs(high - prev), np.abs(low - prev)))
    tr = np.where(fresh, high - low, tr)
    atr = _ema(tr, spec.atr_period, 1.0 / spec.atr_period)
    diff = _ema(close, spec.fast, 2.0 / (spec.fast + 1)) - _ema(
        close, spec.slow, 2.0 / (spec.slow + 1)
    )
    value = np.full_like(diff, np.nan)
    np.divide(diff, atr, out=value, where=atr > 0)  # NaN or zero ATR stays NaN, no warning
    value *= spec.scale
    return value, _ema(value, spec.signal, 2.0 / (spec.signal + 1))


def _gap_after(index: pd.DatetimeIndex, timeframe_seconds: int | None) -> np.ndarray:
    """True for each bar that follows one or more missing periods."""
    step_ns = np.diff(index.as_unit("ns").asi8)
    if timeframe_seconds is None:  # infer the timeframe as the shortest spacing
        timeframe_seconds = int(step_ns.min() // 10**9) if step_ns.size else 1
    after = np.zeros(len(index), dtype=bool)
    after[1:] = step_ns > timeframe_seconds * 10**9
    return after


def _fresh(df: pd.DataFrame, spec: _Spec) -> np.ndarray:
    """Bars whose TR ignores the previous close: bar 0, and bars after gaps if skipping them."""
    fresh = np.zeros(len(df), dtype=bool)
    if spec.skip_gaps:
        fresh |= _gap_after(pd.DatetimeIndex(df.index), spec.timeframe_seconds)
    fresh[:1] = True
    return fresh


def _columns(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """High, low and close as float arrays."""
    return tuple(df[c].to_numpy(dtype="float64") for c in ("high", "low", "close"))


def stages(values: Any, signal: Any) -> np.ndarray:
    """Stage name per bar (object array; None where MACD-V or signal is NaN).

    Bands are checked in this order, so every bar with both values gets exactly one stage
    (v = MACD-V, s = signal, "above" means v > s strictly, anything else is "below"):

    ========================  ==========================  ==============
    band of v                 above signal (v > s)        below (v <= s)
    ========================  ==========================  ==============
    v < -150                  oversold                    oversold
    -150 <= v < -50           rebounding                  reversing
    -50 <= v <= 50            ranging                     ranging
    50 < v <= 150             rallying                    retracing
    v > 150                   overbought                  retracing
    ========================  ==========================  ==============

    Ranging wins inside ±50 (DESIGN's overlapping "rebounding −150..50" and "retracing
    > −50" then apply outside that band).
    """
    v = np.asarray(values, dtype="float64")
    s = np.asarray(signal, dtype="float64")
    above = v > s
    conditions = [
        np.isnan(v) | np.isnan(s),
        v < -150,
        (v < -50) & above,
        v < -50,
        v <= 50,
        (v <= 150) & above,
        v > 150,
    ]
    names = [None, "oversold", "rebounding", "reversing", "ranging", "rallying"]
    choices = [np.full(v.shape, name, dtype=object) for name in names]
    choices.append(np.where(above, "overbought", "retracing").astype(object))
    return np.select(conditions, choices, default="retracing")


def macdv(
    df: pd.DataFrame,
    *,
    fast: int = 12,
    slow: int = 26,
    atr_period: int = 26,
    signal: int = 9,
    scale: float = 100.0,
    skip_gaps: bool = False,
    timeframe_seconds: int | None = None,
) -> pd.DataFrame:
    """MACD-V, signal, histogram and stage per candle, so notebooks and gates share one formula.

    ``timeframe_seconds`` is only used with ``skip_gaps`` (inferred from the shortest
    spacing when None). Bars before the indicator has enough history are NaN / None.
    """
    spec = _Spec(
        fast=fast,
        slow=slow,
        atr_period=atr_period,
        signal=signal,
        scale=scale,
        skip_gaps=skip_gaps,
        timeframe_seconds=timeframe_seconds,
    )
    high, low, close = (a[:, None] for a in _columns(df))
    value, sig = (a[:, 0] for a in _indicator(high, low, close, _fresh(df, spec)[:, None], spec))
    out = pd.DataFrame(
        {"macdv": value, "signal": sig, "histogram": value - sig}, index=df.index.copy()
    )
    out["stage"] = pd.Series(stages(value, sig), index=out.index, dtype=object)
    return out


def find_gaps(df: pd.DataFrame, timeframe_seconds: int) -> pd.DataFrame:
    """Runs of missing periods between consecutive candles, to see how illiquid a series is.

    One row per gap: ``start`` (open time of the first missing period), ``end`` (open time
    of the candle that resumes the series, exclusive) and ``missing`` (periods absent).
    """
    if timeframe_seconds <= 0:
        raise ConfigError(f"timeframe_seconds must be positive, got {timeframe_seconds}")
    index = pd.DatetimeIndex(df.index)
    step = pd.Timedelta(seconds=timeframe_seconds)
    after = np.flatnonzero(_gap_after(index, timeframe_seconds))
    ends = index[after]
    starts = index[after - 1] + step
    missing = ((ends - starts) // step).to_numpy(dtype="int64")
    return pd.DataFrame({"start": starts, "end": ends, "missing": missing})


def warmup_errors(
    df: pd.DataFrame,
    ns: Any = range(30, 401, 10),
    *,
    ends: int = 200,
    reference_factor: float = 2.0,
    **macdv_kwargs: Any,
) -> pd.DataFrame:
    """|MACD-V from only the newest N candles − MACD-V from the full history|, per N.

    Measured at each of the last ``ends`` bars that have at least ``reference_factor × N``
    bars of history (so the full-history reference is itself warmed well past N). Returns
    one row per N (index ``n``): ``ends`` used, ``last`` (error at the newest bar, NaN if
    it does not qualify), ``median`` and ``max`` (NaN when no end qualifies). A value that
    exists on one side only counts as an infinite error.
    """
    spec = _Spec(**macdv_kwargs)
    high, low, close = _columns(df)
    fresh = _fresh(df, spec)
    full = _indicator(high[:, None], low[:, None], close[:, None], fresh[:, None], spec)[0][:, 0]
    total = len(df)
    rows = []
    for n in ns:
        first_end = max(total - ends, int(np.ceil(reference_factor * n)) - 1, n - 1)
        if first_end >= total:
            rows.append((n, 0, np.nan, np.nan, np.nan))
            continue
        starts = slice(first_end - n + 1, total - n + 1)
        h, lo, c, first = (sliding_window_view(a, n)[starts].T for a in (high, low, close, fresh))
        first = first.copy()
        first[0] = True  # each window starts afresh: its first TR is H-L
        value = _indicator(h, lo, c, first, spec)[0][-1]
        ref = full[first_end:]
        err = np.abs(value - ref)
        err = np.where(np.isnan(value) & np.isnan(ref), 0.0, np.nan_to_num(err, nan=np.inf))
        rows.append((n, err.size, err[-1], float(np.median(err)), float(err.max())))
    return pd.DataFrame(rows, columns=["n", "ends", "last", "median", "max"]).set_index("n")


def min_candles_for(
    errors: pd.DataFrame, tolerance: float = 0.1, *, column: str = "max"
) -> int | None:
    """Smallest measured N from which ``errors[column]`` stays below ``tolerance`` for all larger N.

    None when no N was measured or the largest measured N is still not below it.
    """
    measured = errors[column].dropna().sort_index()
    below = (measured < tolerance).to_numpy()
    if not below.size or not below[-1]:
        return None
    failing = np.flatnonzero(~below)
    return int(measured.index[failing[-1] + 1 if failing.size else 0])


def untrusted_bars(candles: int, min_candles: int) -> int:
    """How many leading bars of a ``candles``-bar series rest on fewer than ``min_candles``.

    Bar ``i`` is computed from the ``i + 1`` candles up to it, so these are the bars the
    readiness gate (and the warmup table's candle rule) would not trust on their own.
    """
    return max(0, min(candles, min_candles - 1))
