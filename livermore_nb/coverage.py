"""What the Redis cache holds: per-series counts, first/last, gaps, staleness and warmup.

``coverage(redis, symbols, timeframes)`` is the one-call summary; notebooks that
also want the gaps or the MACD-V warmup read the series once with
:func:`load_series` and pass the frames to :func:`summarize`, :func:`series_gaps`
and :func:`warmup_table`. Everything is synchronous (a ``redis.Redis`` client or
a URL), so it runs in a plain script as well as in a notebook cell.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime

import numpy as np
import pandas as pd

from .backfill import parse_symbols
from .macdv import find_gaps, macdv, warmup_errors
from .store import (
    DEFAULT_KEY_TEMPLATE,
    SyncRedis,
    check_key_template,
    connect_sync,
    format_key,
    read_frames_sync,
)
from .timeframes import STALE_PERIODS, TIMEFRAMES, is_stale, parse_timeframes

__all__ = [
    "COVERAGE_COLUMNS",
    "GAP_COLUMNS",
    "WARMUP_COLUMNS",
    "coverage",
    "load_series",
    "serializable",
    "series_gaps",
    "summarize",
    "warmup_table",
]

Series = tuple[str, str]
"""(symbol, timeframe name)."""
Frames = Mapping[Series, pd.DataFrame]

COVERAGE_COLUMNS: tuple[str, ...] = (
    "symbol",
    "timeframe",
    "candles",
    "target",
    "first",
    "last",
    "missing",
    "largest_gap",
    "age",
    "stale",
)
GAP_COLUMNS: tuple[str, ...] = ("symbol", "timeframe", "start", "end", "missing")
WARMUP_COLUMNS: tuple[str, ...] = (
    "symbol",
    "timeframe",
    "candles",
    "macdv",
    "signal",
    "stage",
    "checked_n",
    "error",
    "trustworthy",
    "reason",
)


@contextmanager
def _client(redis: SyncRedis | str | None) -> Iterator[SyncRedis]:
    """Use the given client (plain or cluster), or open (and afterwards close) one for a URL."""
    if redis is not None and not isinstance(redis, str):
        yield redis
        return
    client = connect_sync(redis)
    try:
        yield client
    finally:
        client.close()


def _utc(now: pd.Timestamp | datetime | float | None) -> pd.Timestamp:
    """``now`` as a UTC Timestamp (None = the wall clock; floats are UNIX seconds)."""
    if now is None:
        return pd.Timestamp.now(tz="UTC")
    stamp = pd.Timestamp(now, unit="s") if isinstance(now, int | float) else pd.Timestamp(now)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def load_series(
    redis: SyncRedis | str | None,
    symbols: str | Sequence[str],
    timeframes: str | Sequence[str],
    *,
    key_template: str = DEFAULT_KEY_TEMPLATE,
    user_id: int = 1,
    exchange_id: int = 1,
) -> dict[Series, pd.DataFrame]:
    """Every series of ``symbols`` × ``timeframes`` as analysis frames (empty when absent)."""
    check_key_template(key_template)
    pairs = [(s, tf.name) for s in parse_symbols(symbols) for tf in parse_timeframes(timeframes)]
    keys = [
        format_key(key_template, s, tf, user_id=user_id, exchange_id=exchange_id) for s, tf in pairs
    ]
    with _client(redis) as client:
        frames = read_frames_sync(client, keys)
    return dict(zip(pairs, frames, strict=True))


def series_gaps(frames: Frames) -> pd.DataFrame:
    """Every run of missing periods in every series: one row per gap (GAP_COLUMNS)."""
    parts = [
        find_gaps(frame, TIMEFRAMES[tf].seconds).assign(symbol=symbol, timeframe=tf)
        for (symbol, tf), frame in frames.items()
        if len(frame) > 1
    ]
    parts = [p for p in parts if len(p)]
    if not parts:
        empty = pd.Series([], dtype="datetime64[ns, UTC]")
        return pd.DataFrame(
            {"symbol": [], "timeframe": [], "start": empty, "end": empty, "missing": []}
        ).astype({"symbol": object, "timeframe": object, "missing": "int64"})
    return pd.concat(parts, ignore_index=True)[list(GAP_COLUMNS)]


def summarize(
    frames: Frames,
    *,
    target: int = 300,
    now: pd.Timestamp | datetime | float | None = None,
    stale_periods: float = STALE_PERIODS,
) -> pd.DataFrame:
    """One row per series (COVERAGE_COLUMNS), so a person sees at once what is short or old.

    ``missing`` counts the absent periods between first and last, ``largest_gap`` is
    the longest run of them (periods). ``age`` is the time since the newest candle
    *closed* (negative while it is still open); a series is ``stale`` when empty or
    when more periods have closed since than ``stale_periods`` and than twice its
    largest gap (:func:`~livermore_nb.timeframes.is_stale`, the gate's rule too).
    """
    clock = _utc(now)
    gaps = series_gaps(frames).groupby(["symbol", "timeframe"])["missing"]
    missing, largest = gaps.sum().to_dict(), gaps.max().to_dict()
    rows = []
    for (symbol, tf), frame in frames.items():
        period_s = TIMEFRAMES[tf].seconds
        period = pd.Timedelta(seconds=period_s)
        first = frame.index[0] if len(frame) else pd.NaT
        last = frame.index[-1] if len(frame) else pd.NaT
        age = clock - (last + period) if len(frame) else pd.NaT
        largest_gap = int(largest.get((symbol, tf), 0))
        stale = pd.isna(age) or is_stale(
            age.total_seconds(), period_s, largest_gap=largest_gap, stale_periods=stale_periods
        )
        rows.append(
            {
                "symbol": symbol,
                "timeframe": tf,
                "candles": len(frame),
                "target": target,
                "first": first,
                "last": last,
                "missing": int(missing.get((symbol, tf), 0)),
                "largest_gap": largest_gap,
                "age": age,
                "stale": bool(stale),
            }
        )
    out = pd.DataFrame(rows, columns=list(COVERAGE_COLUMNS))
    for column in ("first", "last"):
        out[column] = pd.to_datetime(out[column], utc=True)
    out["age"] = pd.to_timedelta(out["age"])
    return out


def coverage(
    redis: SyncRedis | str | None,
    symbols: str | Sequence[str],
    timeframes: str | Sequence[str],
    *,
    key_template: str = DEFAULT_KEY_TEMPLATE,
    user_id: int = 1,
    exchange_id: int = 1,
    target: int = 300,
    now: pd.Timestamp | datetime | float | None = None,
    stale_periods: float = STALE_PERIODS,
) -> pd.DataFrame:
    """What Redis holds for each series now (see :func:`summarize` for the columns)."""
    frames = load_series(
        redis, symbols, timeframes, key_template=key_template, user_id=user_id,
        exchange_id=exchange_id,
    )  # fmt: skip
    return summarize(frames, target=target, now=now, stale_periods=stale_periods)


def serializable(cov: pd.DataFrame) -> pd.DataFrame:
    """The coverage frame with ISO-8601 UTC times and ``age_s`` in seconds, for JSON and CSV."""
    out = cov.drop(columns="age").assign(age_s=cov["age"].dt.total_seconds().round(3))
    for column in ("first", "last"):
        out[column] = cov[column].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def _warmup_row(frame: pd.DataFrame, min_candles: int, tolerance: float) -> dict[str, object]:
    """Current MACD-V of one series and whether its warmup error is small enough to trust."""
    count = len(frame)
    latest = macdv(frame).iloc[-1] if count else None
    # The longest window whose full-history reference is warm (warmup_errors needs 2×N bars).
    n = count // 2
    error = float(warmup_errors(frame, [n], ends=1)["last"].iloc[0]) if n >= 30 else np.nan
    if count < min_candles:
        reason = f"{count} < {min_candles} candles"
    elif np.isnan(error):
        reason = "too little history to measure the warmup error"
    elif error >= tolerance:
        reason = f"warmup error {error:.3g} ≥ {tolerance:g} at N={n}"
    else:
        reason = ""
    return {
        "candles": count,
        "macdv": np.nan if latest is None else latest["macdv"],
        "signal": np.nan if latest is None else latest["signal"],
        "stage": None if latest is None else latest["stage"],
        "checked_n": n if n >= 30 else None,
        "error": error,
        "trustworthy": not reason,
        "reason": reason,
    }


def warmup_table(frames: Frames, *, min_candles: int = 150, tolerance: float = 0.5) -> pd.DataFrame:
    """Per series: current MACD-V and stage, and whether enough history backs it (WARMUP_COLUMNS).

    ``error`` is |MACD-V from the newest ``checked_n`` = ⌊candles / 2⌋ candles − MACD-V
    from all cached candles| at the newest candle. Errors shrink as N grows, so this
    over-estimates the error of the value computed from every cached candle: a series
    is trustworthy when it holds ``min_candles`` and this bound is below ``tolerance``
    (MACD-V points).
    """
    rows = [
        {"symbol": symbol, "timeframe": tf, **_warmup_row(frame, min_candles, tolerance)}
        for (symbol, tf), frame in frames.items()
    ]
    return pd.DataFrame(rows, columns=list(WARMUP_COLUMNS))
