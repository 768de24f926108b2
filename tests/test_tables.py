"""tables.py: coverage frames as people read them (ages to the second, gaps with units)."""

from __future__ import annotations

import pandas as pd
import pytest

from livermore_nb.candles import to_frame
from livermore_nb.coverage import summarize
from livermore_nb.tables import duration, periods, readable
from livermore_nb.timeframes import TIMEFRAMES


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (pd.Timedelta("0 days 00:03:12.418733"), "3 m 12 s"),
        (pd.Timedelta(hours=2, minutes=15, seconds=59.6), "2 h 16 m"),
        (pd.Timedelta(days=3, hours=4, seconds=7), "3 d 4 h 7 s"),
        (pd.Timedelta(seconds=-30.2), "-30 s"),
        (pd.Timedelta(milliseconds=400), "0 s"),
        (pd.NaT, "—"),
    ],
)
def test_duration_rounds_to_seconds(delta: pd.Timedelta, text: str) -> None:
    assert duration(delta) == text


def test_periods_name_count_timeframe_and_span() -> None:
    assert periods(3, "5m") == "3 × 5m (15 m)"
    assert periods(30, "4h") == "30 × 4h (5 d)"
    assert periods(0, "1h") == "0"


def test_readable_coverage_frame() -> None:
    step = TIMEFRAMES["5m"].ms
    start = pd.Timestamp("2024-04-04", tz="UTC").value // 10**6
    rows = [(start + i * step, 1.0, 1.0, 1.0, 1.0, 1.0) for i in range(10) if i not in (3, 4, 5, 7)]
    frames = {("BTC-USD", "5m"): to_frame(rows), ("NOPE-USD", "5m"): to_frame([])}
    now = pd.Timestamp("2024-04-04 00:53:07.25", tz="UTC")  # newest closed 00:50
    cov = summarize(frames, now=now)
    shown = readable(cov)
    assert shown["age"].tolist() == ["3 m 7 s", "—"]
    assert shown["missing"].tolist() == ["4 × 5m (20 m)", "0"]
    assert shown["largest_gap"].tolist() == ["3 × 5m (15 m)", "0"]
    assert shown["candles"].tolist() == cov["candles"].tolist()
    assert cov["age"].iloc[0] == pd.Timedelta(minutes=3, seconds=7.25)  # the input is untouched
