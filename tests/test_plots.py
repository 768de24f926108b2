"""plots.py: each figure has the labels, titles and artists a reader relies on, and renders."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from livermore_nb import plots
from livermore_nb.candles import to_frame
from livermore_nb.coverage import series_gaps, summarize
from livermore_nb.macdv import macdv, warmup_errors
from livermore_nb.timeframes import TIMEFRAMES

matplotlib.use("Agg")

NOW = pd.Timestamp("2024-04-04 12:02", tz="UTC")
SYMBOLS = [f"SYN{i}-USD" for i in range(26)]


def walk(n: int, tf: str, *, drop: tuple[int, ...] = (), seed: int = 0) -> pd.DataFrame:
    """``n`` periods of a random walk ending at NOW's last closed ``tf`` bucket, minus ``drop``."""
    step = TIMEFRAMES[tf].ms
    end = TIMEFRAMES[tf].floor(NOW.timestamp()) * 1000 - step
    close = 100 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.01, n)))
    rows = [
        (end - (n - 1 - i) * step, c, c * 1.01, c * 0.99, c, 1.0)
        for i, c in enumerate(close)
        if i not in drop
    ]
    return to_frame(rows)


@pytest.fixture(scope="module")
def frames() -> dict[tuple[str, str], pd.DataFrame]:
    out = {}
    for i, symbol in enumerate(SYMBOLS):
        for tf in ("5m", "1h", "1d"):
            n = 300 if i % 5 else 120
            out[(symbol, tf)] = walk(n, tf, drop=(10, 11, 50) if i == 3 else (), seed=i)
    out[("SYN0-USD", "1d")] = walk(0, "1d")
    return out


@pytest.fixture(scope="module")
def cov(frames) -> pd.DataFrame:
    return summarize(frames, now=NOW)


def save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=60)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_coverage_heatmap_annotates_every_cell(cov, tmp_path: Path) -> None:
    fig = plots.coverage_heatmap(cov)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == SYMBOLS
    assert [t.get_text() for t in ax.get_xticklabels()] == ["5m", "1h", "1d"]
    assert len(ax.texts) == len(SYMBOLS) * 3 and {"300", "120", "0"} <= {
        t.get_text() for t in ax.texts
    }
    assert ax.get_xlabel() == "timeframe" and ax.get_ylabel() == "symbol"
    assert "target 300" in ax.get_title()
    assert fig.axes[1].get_ylabel() == "share of target"
    image = ax.get_images()[0].get_array()
    assert image.max() == 1.0 and image.min() == 0.0
    save(fig, tmp_path / "heatmap.png")


def test_gap_timeline_has_a_panel_per_gappy_timeframe(frames, cov, tmp_path: Path) -> None:
    gaps = series_gaps(frames)
    fig = plots.gap_timeline(cov, gaps)
    assert len(fig.axes) == 3
    for ax, tf in zip(fig.axes, ("5m", "1h", "1d"), strict=True):
        assert ax.get_title(loc="left").startswith(f"{tf}: 2 gaps, 3 missing periods in 1 of")
        assert [t.get_text() for t in ax.get_yticklabels()] == ["SYN3-USD"]
        assert ax.get_xlabel() == "time (UTC)"
        bars = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert len(bars) == 2  # the cached span and the gaps
    everything = plots.gap_timeline(cov, gaps, only_gappy=False)
    assert len(everything.axes[0].get_yticks()) == len(SYMBOLS)
    save(fig, tmp_path / "gaps.png")
    none = plots.gap_timeline(cov, gaps.iloc[0:0])
    assert "no gaps in" in none.axes[0].texts[0].get_text()


def test_staleness_chart_bars_per_series(cov, tmp_path: Path) -> None:
    stale_cov = cov.copy()
    stale_cov.loc[3, ["age", "stale"]] = [pd.Timedelta(minutes=20), True]
    fig = plots.staleness_chart(stale_cov)
    ax = fig.axes[0]
    assert len(ax.patches) == len(cov)
    assert "periods" in ax.get_xlabel() and "2024-04-04 12:02 UTC" in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == [
        "stale after 2 periods",
        "5m",
    ]
    assert any(t.get_text() == "empty" for t in ax.texts)
    widths = {round(p.get_width(), 3) for p in ax.patches}
    assert 4.0 in widths  # 20 min = 4 periods of 5m
    save(fig, tmp_path / "staleness.png")


def test_macdv_panel_draws_price_indicator_and_bands(frames, tmp_path: Path) -> None:
    frame = frames[("SYN1-USD", "1h")]
    indicator = macdv(frame)
    fig = plots.macdv_panel(frame, indicator, title="SYN1-USD 1h")
    price, macd = fig.axes
    assert price.get_title() == "SYN1-USD 1h" and "close" in price.get_ylabel()
    assert macd.get_ylabel() == "MACD-V (points)" and macd.get_xlabel() == "time (UTC)"
    labels = [t.get_text() for t in macd.get_legend().get_texts()]
    assert labels == ["MACD-V", "signal (EMA 9)", "histogram (MACD-V − signal)"]
    levels = sorted(line.get_ydata()[0] for line in macd.get_lines()[2:])
    assert levels == [-150, -50, 50, 150]
    assert len(macd.containers[0]) == len(frame)  # one histogram bar per candle
    stages = {t.get_text() for t in price.get_legend().get_texts()}
    assert stages == set(indicator["stage"].dropna())
    save(fig, tmp_path / "macdv.png")


def test_warmup_curve_log_scale_marks_and_tolerance(frames, tmp_path: Path) -> None:
    errors = warmup_errors(frames[("SYN1-USD", "5m")], ns=range(30, 401, 10))
    fig = plots.warmup_curve(errors, tolerance=0.5, title="SYN1-USD 5m")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_title() == "SYN1-USD 5m"
    assert ax.get_xlabel().startswith("N ") and "points" in ax.get_ylabel()
    assert {t.get_text() for t in ax.texts} == {"N=60", "N=100", "N=150", "N=300"}
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["max over end points", "median over end points", "tolerance 0.5"]
    assert ax.get_xlim()[1] >= 300
    max_line = ax.get_lines()[0]
    assert max(max_line.get_xdata()) <= 150  # N beyond half the history is not drawn
    save(fig, tmp_path / "warmup.png")
