"""Candles: parsing and validating API payloads, the DataFrame schema, resampling.

Two shapes, one meaning:

* ``Candle`` tuples (timestamp in ms, open, high, low, close, volume) on the hot
  path from the API to Redis, where per-candle cost matters;
* DataFrames for analysis: a UTC ``DatetimeIndex`` named ``time`` (candle open
  time) and float columns ``open high low close volume``, oldest first.
"""

from __future__ import annotations

import gzip
import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from itertools import islice
from math import fsum
from operator import gt, itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import InvalidCandle, MalformedResponse
from .timeframes import Timeframe

if TYPE_CHECKING:  # numpy and pandas load only for analysis, not on a backfill's path
    import pandas as pd

FRAME_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")


class Candle(NamedTuple):
    """One OHLCV candle; ``timestamp`` is its open time in milliseconds since epoch."""

    timestamp: int
    open: float
    high: float
    low: float
    close: float
    volume: float


_INF = math.inf
_FIELDS = ("start", "open", "high", "low", "close", "volume")
_get_fields = itemgetter(*_FIELDS)
candle_time = itemgetter(0)
"""A candle's open time (ms): the key for sorting and bisecting candle lists."""
_new_candle = tuple.__new__
"""``_new_candle(Candle, (ts, o, h, l, c, v))``: a Candle without ``__new__``'s Python frame."""


def validate_candle(candle: Candle, tf: Timeframe) -> Candle:
    """Return ``candle`` if it is sane for ``tf``; raise InvalidCandle saying why otherwise."""
    ts, o, h, lo, c, v = candle
    if ts % tf.ms:
        raise InvalidCandle(f"{tf.name} candle at {ts} ms is off the {tf.name} grid")
    if not all(math.isfinite(x) for x in (o, h, lo, c, v)):
        raise InvalidCandle(f"candle at {ts} ms has a non-finite value")
    if min(o, h, lo, c) <= 0 or v < 0:
        raise InvalidCandle(f"candle at {ts} ms has a negative or zero price or negative volume")
    if h < lo or h < max(o, c) or lo > min(o, c):
        raise InvalidCandle(f"candle at {ts} ms is inconsistent (high {h} < low {lo} or range)")
    return candle


def parse_candle(raw: dict[str, Any], tf: Timeframe) -> Candle:
    """Parse one API candle (values are strings; plain numbers pass too) and validate it."""
    try:
        if any(isinstance(raw[field], bool) for field in _FIELDS):
            raise InvalidCandle(f"candle {raw!r:.120} has a true/false value")
        start = raw["start"]
        candle = Candle(
            int(start) * 1000,
            float(raw["open"]),
            float(raw["high"]),
            float(raw["low"]),
            float(raw["close"]),
            float(raw["volume"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidCandle(f"candle {raw!r:.120} is not numeric or misses a field") from exc
    return validate_candle(candle, tf)


class _NotSane(Exception):
    """A candle failed the fast check (``parse_candle`` then says why)."""


def _parse_sane(raws: list[Any], grid_ms: int) -> list[Candle]:
    """The hot path of :func:`parse_candles_payload`, for pages that are all valid.

    The chained comparison accepts exactly what ``validate_candle`` accepts: on
    the grid, ``0 < low <= open, close <= high < inf`` and ``0 <= volume < inf``
    (NaN fails every comparison); anything else raises.
    """
    out = []
    for raw in raws:
        s, o, h, lo, c, v = _get_fields(raw)
        if not (type(s) is type(o) is type(h) is type(lo) is type(c) is type(v) is str):
            raise _NotSane  # Coinbase sends strings; anything else takes the careful path
        ts = int(s) * 1000
        o, h, lo, c, v = float(o), float(h), float(lo), float(c), float(v)
        if ts % grid_ms or not (0 < lo <= o <= h < _INF and lo <= c <= h and 0 <= v < _INF):
            raise _NotSane
        out.append(_new_candle(Candle, (ts, o, h, lo, c, v)))
    return out


def parse_candles_payload(payload: Any, tf: Timeframe) -> list[Candle]:
    """Parse a ``{"candles": [...]}`` body into validated candles, newest first as sent.

    A body of the wrong shape or with an invalid candle raises MalformedResponse
    (the page is rejected whole, so nothing invalid is ever written).
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("candles"), list):
        raise MalformedResponse(f"expected an object with a 'candles' list, got {payload!r:.120}")
    try:
        return _parse_sane(payload["candles"], tf.ms)
    except (_NotSane, LookupError, TypeError, ValueError, AttributeError):
        pass  # something is wrong: the careful path below says what
    try:
        return [parse_candle(raw, tf) for raw in payload["candles"]]
    except InvalidCandle as exc:
        raise MalformedResponse(str(exc)) from exc
    except AttributeError as exc:  # a non-dict entry
        raise MalformedResponse("a candle entry is not an object") from exc


def reject_conflicts(candles: Sequence[Candle]) -> None:
    """Raise MalformedResponse when two candles of one page share a timestamp but differ.

    Identical copies are harmless (the recorded data has some); differing ones
    mean the server cannot be trusted with either. Called only for pages that are
    not strictly newest first, so the usual page pays one comparison per candle.
    """
    seen: dict[int, Candle] = {}
    for candle in candles:
        if seen.setdefault(candle[0], candle) != candle:
            raise MalformedResponse(f"two different candles at {candle[0]} ms in one response")


def strictly_descending(stamps: Sequence[int]) -> bool:
    """True when ``stamps`` are newest first with no repeat (how Coinbase sends a page)."""
    return all(map(gt, stamps, islice(stamps, 1, None)))


def dedupe_sorted(candles: Iterable[Candle]) -> list[Candle]:
    """Oldest first, one candle per timestamp (the last one seen wins).

    Pages arrive newest first and cover disjoint windows, so the usual input is
    strictly descending: that is reversed as it is, with no dict and no sort.
    """
    candles = list(candles)
    if strictly_descending(list(map(candle_time, candles))):
        return candles[::-1]
    return sorted({c.timestamp: c for c in candles}.values())


def to_frame(candles: Sequence[Candle]) -> pd.DataFrame:
    """Candle tuples → the analysis DataFrame (oldest first, UTC index ``time``)."""
    import numpy as np
    import pandas as pd

    arr = np.asarray(candles, dtype="float64").reshape(-1, 6)
    index = pd.DatetimeIndex(pd.to_datetime(arr[:, 0].astype("int64"), unit="ms", utc=True))
    index = index.as_unit("ns")
    frame = pd.DataFrame(arr[:, 1:], index=index, columns=list(FRAME_COLUMNS))
    frame.index.name = "time"
    return frame.sort_index()


def resample(frame: pd.DataFrame, seconds: int) -> pd.DataFrame:
    """Aggregate a candle frame into UTC-aligned buckets of ``seconds``.

    Open of the first, max high, min low, close of the last, summed volume; a
    bucket exists only where at least one source candle does.
    """
    import pandas as pd

    rule = pd.Timedelta(seconds=seconds)
    grouped = frame.groupby(frame.index.floor(rule))
    out = pd.DataFrame(
        {
            "open": grouped["open"].first(),
            "high": grouped["high"].max(),
            "low": grouped["low"].min(),
            "close": grouped["close"].last(),
            "volume": grouped["volume"].sum(),
        }
    )
    out.index.name = "time"
    return out


def complete_buckets(target: Timeframe, window_start_ms: int, window_end_ms: int) -> range:
    """Open times (ms) of the ``target`` buckets lying wholly inside the window."""
    size = target.ms
    return range(-(-window_start_ms // size) * size, window_end_ms // size * size, size)


def aggregate(
    candles: Sequence[Candle], target: Timeframe, window_start_ms: int, window_end_ms: int
) -> list[Candle]:
    """Build ``target`` candles (e.g. 4h) from finer ones (oldest first), complete buckets only.

    A bucket is complete when it lies wholly inside ``[window_start_ms,
    window_end_ms)``, the span the finer candles were fetched for and closed in;
    periods with no trades are legitimately absent and do not make a bucket partial.
    """
    size = target.ms
    buckets = complete_buckets(target, window_start_ms, window_end_ms)
    lo = bisect_left(candles, buckets.start, key=candle_time)
    hi = bisect_left(candles, buckets.stop, key=candle_time, lo=lo)
    out: list[Candle] = []
    bucket: int | None = None
    b_open = b_high = b_low = b_close = 0.0
    volumes: list[float] = []
    # One pass over the sorted candles, no DataFrame round trip: this runs for every 4h series.
    for ts, o, h, low, c, v in candles[lo:hi]:
        start = ts - ts % size
        if start != bucket:
            if bucket is not None:
                total = _volume_sum(bucket, volumes)
                out.append(_new_candle(Candle, (bucket, b_open, b_high, b_low, b_close, total)))
            bucket, b_open, b_high, b_low, b_close, volumes = start, o, h, low, c, [v]
            continue
        if h > b_high:
            b_high = h
        if low < b_low:
            b_low = low
        b_close = c
        volumes.append(v)  # summed by fsum: correctly rounded whatever the order
    if bucket is not None:
        total = _volume_sum(bucket, volumes)
        out.append(_new_candle(Candle, (bucket, b_open, b_high, b_low, b_close, total)))
    return out


def _volume_sum(bucket: int, volumes: list[float]) -> float:
    """The bucket's summed volume; MalformedResponse if it is not a finite number."""
    try:
        total = fsum(volumes)
    except OverflowError:
        total = _INF
    if total == _INF:
        raise MalformedResponse(f"the volumes of the bucket at {bucket} ms sum beyond a float")
    return total


def read_recorded_csv(path: str | Path) -> pd.DataFrame:
    """Read a recorded Coinbase CSV (``time,low,high,open,close,volume``, newest first).

    ``time`` is a UTC date-time (``2023-12-29 17:55:00``) or UNIX seconds.

    Returns the analysis frame, oldest first, duplicates removed.
    """
    import pandas as pd

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        raw = pd.read_csv(fh)
    raw = raw.drop_duplicates(subset="time", keep="first")
    index = pd.DatetimeIndex(pd.to_datetime(raw["time"], utc=True)).as_unit("ns")
    frame = pd.DataFrame({c: raw[c].to_numpy(dtype="float64") for c in FRAME_COLUMNS}, index=index)
    frame.index.name = "time"
    return frame.sort_index()
