"""Coverage frames as a person reads them: ages rounded to seconds, gaps with their units.

The frames of :mod:`livermore_nb.coverage` keep exact values (Timedeltas, period
counts) for code; :func:`readable` turns one into the table a notebook shows,
so ``0 days 00:03:12.418733`` reads ``3 m 12 s`` and a gap of 3 reads
``3 × 5m (15 m)``.
"""

from __future__ import annotations

import pandas as pd

from .timeframes import TIMEFRAMES

__all__ = ["duration", "periods", "readable"]

_UNITS: tuple[tuple[str, int], ...] = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def duration(delta: pd.Timedelta | object, *, units: int | None = None) -> str:
    """``delta`` rounded to seconds, in its non-zero units (``2 h 15 m 4 s``); ``—`` for NaT.

    ``units`` keeps only that many of the largest (``units=2``: ``2 h 15 m``), for tight cells.
    """
    if delta is None or pd.isna(delta):
        return "—"
    seconds = round(pd.Timedelta(delta).total_seconds())
    left, parts = abs(seconds), []
    for unit, size in _UNITS:
        if left >= size:
            parts.append(f"{left // size} {unit}")
            left %= size
    return ("-" if seconds < 0 else "") + (" ".join(parts[:units]) or "0 s")


def periods(count: int, timeframe: str) -> str:
    """``count`` periods of ``timeframe`` with the time they span: ``3 × 5m (15 m)``; 0 is ``0``."""
    if not count:
        return "0"
    span = pd.Timedelta(seconds=int(count) * TIMEFRAMES[timeframe].seconds)
    return f"{int(count)} × {timeframe} ({duration(span)})"


def readable(cov: pd.DataFrame) -> pd.DataFrame:
    """``cov`` for display: ``age`` as a duration, ``missing`` and ``largest_gap`` with units."""
    out = cov.copy()
    out["age"] = cov["age"].map(duration)
    for column in ("missing", "largest_gap"):
        out[column] = [periods(n, tf) for n, tf in zip(cov[column], cov["timeframe"], strict=True)]
    return out
