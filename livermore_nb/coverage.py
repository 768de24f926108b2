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
    key_parser,
    key_pattern,
    read_frames_sync,
    scan_keys,
)
from .tables import duration
from .timeframes import (
    DEFAULT_TIMEFRAMES,
    ISO_UTC,
    STALE_PERIODS,
    TIMEFRAMES,
    is_stale,
    parse_timeframes,
)
from .timeframes import largest_gap as _largest_gap

__all__ = [
    "COVERAGE_COLUMNS",
    "GAP_COLUMNS",
    "WARMUP_COLUMNS",
    "cached_series",
    "check_problems",
    "coverage",
    "load_series",
    "serializable",
    "series_gaps",
    "staleness",
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
"""Columns of :func:`coverage` and :func:`summarize`, one row per series:

- ``symbol``: product id
- ``timeframe``: timeframe name
- ``candles``: candles Redis holds (count)
- ``target``: candles wanted per series (``--target``, count)
- ``first``: open time of the oldest candle (UTC timestamp; ISO-8601 in JSON/CSV)
- ``last``: open time of the newest candle (UTC timestamp; ISO-8601 in JSON/CSV)
- ``missing``: absent periods between first and last (count of periods)
- ``largest_gap``: the longest run of absent periods (periods)
- ``age``: time since the newest candle closed (Timedelta; ``age_s`` in seconds in JSON/CSV)
- ``stale``: empty, or more than ``stale_periods`` periods closed since the newest candle
"""
GAP_COLUMNS: tuple[str, ...] = ("symbol", "timeframe", "start", "end", "missing")
"""Columns of :func:`series_gaps`, one row per run of absent periods:

- ``symbol``: product id
- ``timeframe``: timeframe name
- ``start``: open time of the first absent period (UTC timestamp)
- ``end``: open time of the last absent period (UTC timestamp)
- ``missing``: absent periods in the run (count of periods)
"""
WARMUP_COLUMNS: tuple[str, ...] = (
    "symbol",
    "timeframe",
    "candles",
    "stale",
    "macdv",
    "signal",
    "stage",
    "checked_n",
    "error",
    "trustworthy",
    "reason",
)
"""Columns of :func:`warmup_table`, one row per series:

- ``symbol``: product id
- ``timeframe``: timeframe name
- ``candles``: candles Redis holds (count)
- ``macdv``: MACD-V at the newest candle (points)
- ``signal``: its signal line at the newest candle (points)
- ``stage``: MACD-V stage at the newest candle (see ``macdv.stages``)
- ``checked_n``: N of the warmup check, ⌊candles / 2⌋ (count; empty below 30)
- ``error``: MACD-V from the newest N candles minus from all, at the newest (points, absolute)
- ``trustworthy``: holds ``min_candles`` and ``error`` is below the tolerance
- ``reason``: why not trustworthy (empty when it is)
"""


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


def staleness(
    frame: pd.DataFrame,
    timeframe: str,
    clock: pd.Timestamp,
    stale_periods: float,
    *,
    largest_gap: int | None = None,
) -> tuple[pd.Timedelta, bool]:
    """Time since ``frame``'s newest candle closed (NaT when empty) and whether it is stale.

    Stale means empty, or :func:`~livermore_nb.timeframes.is_stale` (the gate's rule:
    more periods closed since than ``stale_periods`` and than twice the series'
    largest gap, measured from ``frame`` unless given): the one rule behind
    ``coverage``'s ``stale``, the warmup table's trust and the readiness gate.
    """
    if not len(frame):
        return pd.NaT, True
    period_s = TIMEFRAMES[timeframe].seconds
    if largest_gap is None:
        largest_gap = _largest_gap((frame.index.asi8 // 1_000_000).tolist(), period_s)
    age = clock - (frame.index[-1] + pd.Timedelta(seconds=period_s))
    stale = is_stale(
        age.total_seconds(), period_s, largest_gap=largest_gap, stale_periods=stale_periods
    )
    return age, stale


def cached_series(
    redis: SyncRedis | str | None,
    timeframes: str | Sequence[str] | None = None,
    *,
    key_template: str = DEFAULT_KEY_TEMPLATE,
    user_id: int = 1,
    exchange_id: int = 1,
) -> list[Series]:
    """Every series Redis holds under ``key_template`` (SCAN, never KEYS), by symbol then period.

    Keys that match the template's glob but not its fields (another tool's data
    under the same prefix) are skipped; ``timeframes`` (None = all) narrows the list.
    """
    parse = key_parser(key_template, user_id=user_id, exchange_id=exchange_id)
    pattern = key_pattern(key_template, user_id=user_id, exchange_id=exchange_id)
    wanted = None if timeframes is None else {tf.name for tf in parse_timeframes(timeframes)}
    with _client(redis) as client:
        keys = scan_keys(client, pattern)
    found = {pair for key in keys if (pair := parse(key)) and (wanted is None or pair[1] in wanted)}
    return sorted(found, key=lambda pair: (pair[0], TIMEFRAMES[pair[1]].seconds))


def load_series(
    redis: SyncRedis | str | None,
    symbols: str | Sequence[str] | None = None,
    timeframes: str | Sequence[str] | None = None,
    *,
    key_template: str = DEFAULT_KEY_TEMPLATE,
    user_id: int = 1,
    exchange_id: int = 1,
) -> dict[Series, pd.DataFrame]:
    """Every series of ``symbols`` × ``timeframes`` as analysis frames (empty when absent).

    ``symbols=None`` reads every series the cache holds (:func:`cached_series`);
    ``timeframes=None`` then means all of them, and with symbols the default five.
    """
    check_key_template(key_template)
    with _client(redis) as client:
        if symbols is None:
            pairs = cached_series(
                client, timeframes, key_template=key_template, user_id=user_id,
                exchange_id=exchange_id,
            )  # fmt: skip
        else:
            tfs = parse_timeframes(DEFAULT_TIMEFRAMES if timeframes is None else timeframes)
            pairs = [(s, tf.name) for s in parse_symbols(symbols) for tf in tfs]
        keys = [
            format_key(key_template, s, tf, user_id=user_id, exchange_id=exchange_id)
            for s, tf in pairs
        ]
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
        first = frame.index[0] if len(frame) else pd.NaT
        last = frame.index[-1] if len(frame) else pd.NaT
        largest_gap = int(largest.get((symbol, tf), 0))
        age, stale = staleness(frame, tf, clock, stale_periods, largest_gap=largest_gap)
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
                "stale": stale,
            }
        )
    out = pd.DataFrame(rows, columns=list(COVERAGE_COLUMNS))
    # Typed from the values, not inferred: a column of nothing but NaT (no series holds a
    # candle) is inferred as datetime64, which to_timedelta refuses.
    for column in ("first", "last"):
        out[column] = pd.Series([r[column] for r in rows], dtype="datetime64[ns, UTC]")
    out["age"] = pd.Series([r["age"] for r in rows], dtype="timedelta64[ns]")
    return out


def coverage(
    redis: SyncRedis | str | None,
    symbols: str | Sequence[str] | None = None,
    timeframes: str | Sequence[str] | None = None,
    *,
    key_template: str = DEFAULT_KEY_TEMPLATE,
    user_id: int = 1,
    exchange_id: int = 1,
    target: int = 300,
    now: pd.Timestamp | datetime | float | None = None,
    stale_periods: float = STALE_PERIODS,
) -> pd.DataFrame:
    """What Redis holds for each series now (see :func:`summarize` for the columns).

    Without ``symbols``, every series the cache holds (see :func:`load_series`).
    """
    frames = load_series(
        redis, symbols, timeframes, key_template=key_template, user_id=user_id,
        exchange_id=exchange_id,
    )  # fmt: skip
    return summarize(frames, target=target, now=now, stale_periods=stale_periods)


def serializable(cov: pd.DataFrame) -> pd.DataFrame:
    """The coverage frame with ISO-8601 UTC times and ``age_s`` in seconds, for JSON and CSV."""
    age_s = cov["age"].dt.total_seconds().round(3)
    return cov.drop(columns="age").assign(**_iso_times(cov), age_s=age_s)


def readable(cov: pd.DataFrame) -> pd.DataFrame:
    """The coverage frame for a terminal: ISO-8601 UTC times (as in JSON, CSV and the report)."""
    return cov.assign(**_iso_times(cov), age=cov["age"].dt.round("s"))


def _iso_times(cov: pd.DataFrame) -> dict[str, pd.Series]:
    """``first`` and ``last`` in the one date style (:data:`~livermore_nb.timeframes.ISO_UTC`)."""
    return {column: cov[column].dt.strftime(ISO_UTC) for column in ("first", "last")}


def check_problems(cov: pd.DataFrame, min_candles: int) -> list[str]:
    """Why each series fails a health check: fewer than ``min_candles`` candles, or stale."""
    problems = []
    for row in cov.itertuples(index=False):
        reasons = [f"{row.candles} < {min_candles} candles"] if row.candles < min_candles else []
        reasons += ["stale"] if row.stale else []
        if reasons:
            problems.append(f"{row.symbol} {row.timeframe}: {', '.join(reasons)}")
    return problems


def _warmup_row(
    frame: pd.DataFrame, age: pd.Timedelta, stale: bool, min_candles: int, tolerance: float
) -> dict[str, object]:
    """Current MACD-V of one series and whether it is fresh and warm enough to trust."""
    count = len(frame)
    latest = macdv(frame).iloc[-1] if count else None
    # The longest window whose full-history reference is warm (warmup_errors needs 2×N bars).
    n = count // 2
    error = float(warmup_errors(frame, [n], ends=1)["last"].iloc[0]) if n >= 30 else np.nan
    reasons = []
    if count < min_candles:
        reasons.append(f"{count} < {min_candles} candles")
    elif np.isnan(error):
        reasons.append("too little history to measure the warmup error")
    elif error >= tolerance:
        reasons.append(f"warmup error {error:.3g} ≥ {tolerance:g} at N={n}")
    if stale and count:  # an empty series is already short
        reasons.append(f"stale: newest candle closed {duration(age)} ago")
    return {
        "candles": count,
        "stale": stale,
        "macdv": np.nan if latest is None else latest["macdv"],
        "signal": np.nan if latest is None else latest["signal"],
        "stage": None if latest is None else latest["stage"],
        "checked_n": n if n >= 30 else None,
        "error": error,
        "trustworthy": not reasons,
        "reason": "; ".join(reasons),
    }


def warmup_table(
    frames: Frames,
    *,
    min_candles: int = 150,
    tolerance: float = 0.5,
    now: pd.Timestamp | datetime | float | None = None,
    stale_periods: float = 2.0,
) -> pd.DataFrame:
    """Per series: current MACD-V and stage, and whether enough history backs it (WARMUP_COLUMNS).

    ``error`` is |MACD-V from the newest ``checked_n`` = ⌊candles / 2⌋ candles − MACD-V
    from all cached candles| at the newest candle. Errors shrink as N grows, so this
    over-estimates the error of the value computed from every cached candle: a series
    is trustworthy when it holds ``min_candles``, is not ``stale`` (the rule of
    :func:`staleness`, as in :func:`summarize`) and this bound is below ``tolerance``
    (MACD-V points). ``reason`` names every rule a series fails.
    """
    clock = _utc(now)
    rows = []
    for (symbol, tf), frame in frames.items():
        age, stale = staleness(frame, tf, clock, stale_periods)
        row = _warmup_row(frame, age, stale, min_candles, tolerance)
        rows.append({"symbol": symbol, "timeframe": tf, **row})
    return pd.DataFrame(rows, columns=list(WARMUP_COLUMNS))
