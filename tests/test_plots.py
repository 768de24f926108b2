"""plots.py: each figure has the labels, titles and artists a reader relies on, and renders."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.dates as mdates
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from livermore_nb import plots
from livermore_nb.candles import to_frame
from livermore_nb.coverage import series_gaps, summarize, warmup_table
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
    assert len(ax.texts) == len(SYMBOLS) * 3 and {"300", "120", "0\nempty"} <= {
        t.get_text() for t in ax.texts
    }
    assert ax.get_xlabel() == "timeframe" and ax.get_ylabel() == "symbol"
    assert "target 300" in ax.get_title() and "1 of 78 series stale" in ax.get_title()
    assert fig.axes[1].get_ylabel() == "share of target"
    image = ax.get_images()[0].get_array()
    assert image.max() == 1.0 and image.min() == 0.0
    save(fig, tmp_path / "heatmap.png")


def test_coverage_heatmap_hatches_stale_cells_with_their_age(cov) -> None:
    stale_cov = cov.copy()
    stale_cov.loc[4, ["age", "stale"]] = [pd.Timedelta(hours=3, minutes=12, seconds=9), True]
    fig = plots.coverage_heatmap(stale_cov)
    ax = fig.axes[0]
    hatched = [p for p in ax.patches if p.get_gid() == "stale"]
    assert all(p.get_hatch() for p in hatched)
    cells = {(round(p.get_x() + 0.5), round(p.get_y() + 0.5)) for p in hatched}
    assert cells == {(2, 0), (1, 1)}  # SYN0-USD 1d (empty) and SYN1-USD 1h (row 4 of cov)
    texts = {(round(t.get_position()[0]), round(t.get_position()[1])): t for t in ax.texts}
    assert texts[(1, 1)].get_text() == "300\n3 h 12 m old"
    assert texts[(2, 0)].get_text() == "0\nempty"
    assert "stale" in ax.get_title() and "2 of 78 series stale" in ax.get_title()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "stale: newest candle too old (its age shown) or empty"
    ]
    # white ink on the dark ends of the colour scale, black in its pale middle
    assert texts[(0, 1)].get_color() == "white" and texts[(0, 0)].get_color() == "black"


def test_gap_timeline_has_a_panel_per_gappy_timeframe(frames, cov, tmp_path: Path) -> None:
    gaps = series_gaps(frames)
    fig = plots.gap_timeline(cov, gaps)
    assert len(fig.axes) == 3
    for ax, tf in zip(fig.axes, ("5m", "1h", "1d"), strict=True):
        assert ax.get_title(loc="left").startswith(f"{tf}: 2 gaps, 3 × {tf} (")
        assert " missing in 1 of " in ax.get_title(loc="left")
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
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["5m", "1h", "1d"]
    assert any(t.get_text() == "empty" for t in ax.texts)
    widths = {round(p.get_width(), 3) for p in ax.patches}
    assert 4.0 in widths  # 20 min = 4 periods of 5m
    save(fig, tmp_path / "staleness.png")


def test_staleness_chart_draws_each_series_own_threshold_and_hatches_by_the_rule(
    frames,
) -> None:
    later = summarize(frames, now=NOW + pd.Timedelta(hours=3))  # 1h series: 3 periods old
    fig = plots.staleness_chart(later)
    ax = fig.axes[0]
    bars = {}  # (symbol, timeframe) -> its bar, from the per-timeframe containers
    for container in ax.containers:
        rows = later[later["timeframe"] == container.get_label()]
        names = zip(rows["symbol"], rows["timeframe"], strict=True)
        bars.update(zip(names, container, strict=True))
    assert len(bars) == len(later)
    (marks,) = [line for line in ax.get_lines() if line.get_gid() == "stale-threshold"]
    drawn = set(zip(np.round(marks.get_ydata(), 6), marks.get_xdata(), strict=True))
    for row in later.itertuples():
        bar = bars[(row.symbol, row.timeframe)]
        assert bool(bar.get_hatch()) is bool(row.stale)  # the one rule's verdict, drawn
        if row.candles:  # its mark at max(2, 2 × its largest gap) periods, on its row
            mark = (round(bar.get_y() + bar.get_height() / 2, 6), max(2.0, 2 * row.largest_gap))
            assert mark in drawn
    assert len(drawn) == int((later["candles"] > 0).sum())
    # 3 periods old: stale past the plain threshold of 2, not past SYN3-USD's 4 (gaps of 2)
    assert bars[("SYN4-USD", "1h")].get_hatch() and not bars[("SYN3-USD", "1h")].get_hatch()
    assert round(bars[("SYN3-USD", "1h")].get_width(), 2) == 3.03
    keys = [t.get_text() for t in fig.legends[0].get_texts()]
    assert keys == ["stale after max(2, 2 × largest gap) periods", "stale (hatched)"]
    assert not [line for line in ax.get_lines() if line.get_gid() != "stale-threshold"]


def test_staleness_legend_never_covers_a_bar(cov) -> None:
    old = cov.copy()  # every series 3 periods old: bars reach the right edge on every row
    old["age"] = old["timeframe"].map(lambda tf: pd.Timedelta(seconds=3 * TIMEFRAMES[tf].seconds))
    old["stale"] = True
    for frame in (cov, old, old.iloc[:6]):
        fig = plots.staleness_chart(frame)
        fig.canvas.draw()
        ax = fig.axes[0]
        legend = ax.get_legend().get_window_extent()
        bars = [p.get_window_extent() for p in ax.patches if p.get_width() > 0]
        assert bars and not any(legend.overlaps(bar) for bar in bars)


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
    assert not [p for p in price.patches if p.get_gid() == "warmup"]
    save(fig, tmp_path / "macdv.png")


def warmup_spans(ax) -> list[tuple[float, float]]:
    """(left, right) in date numbers of each warm-up span drawn on ``ax``."""
    return [
        (min(xs), max(xs))
        for p in ax.patches
        if p.get_gid() == "warmup"
        for xs in [p.get_path().transformed(p.get_patch_transform()).vertices[:, 0]]
    ]


@pytest.mark.parametrize(("symbol", "candles"), [("SYN1-USD", 300), ("SYN0-USD", 120)])
def test_macdv_panel_shades_the_bars_the_trust_table_distrusts(
    frames, symbol: str, candles: int
) -> None:
    frame = frames[(symbol, "1h")]
    assert len(frame) == candles
    table = warmup_table({(symbol, "1h"): frame}, min_candles=150, now=NOW)
    fig = plots.macdv_panel(frame, macdv(frame), min_candles=150)
    x = mdates.date2num(frame.index.tz_localize(None).to_numpy())
    half = (x[1] - x[0]) / 2
    shaded = min(candles, 149)  # bar i rests on i + 1 candles; the gate wants 150
    for ax in fig.axes:
        ((left, right),) = warmup_spans(ax)
        assert left == pytest.approx(x[0] - half) and right == pytest.approx(x[shaded - 1] + half)
        assert (x < right).sum() == shaded  # exactly the untrusted bars lie under the span
    label = fig.axes[1].get_legend().get_texts()[-1].get_text()
    assert label == f"warm-up: first {shaded} bars rest on < 150 candles (untrusted)"
    # the newest bar is under the span exactly when the trust table distrusts the series
    assert (shaded == candles) == (not table["trustworthy"].iloc[0])


def test_warmup_curve_log_scale_marks_and_tolerance(frames, tmp_path: Path) -> None:
    errors = warmup_errors(frames[("SYN1-USD", "5m")], ns=range(30, 401, 10))
    fig = plots.warmup_curve(errors, tolerance=0.5, title="SYN1-USD 5m")
    ax, ends_ax = fig.axes
    assert ax.get_yscale() == "log" and ax.get_title() == "SYN1-USD 5m"
    assert ends_ax.get_xlabel().startswith("N ") and "points" in ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["max over end points", "median over end points", "tolerance 0.5"]
    save(fig, tmp_path / "warmup.png")


def test_warmup_curve_stops_where_the_data_stops_and_counts_end_points(frames) -> None:
    errors = warmup_errors(frames[("SYN1-USD", "5m")], ns=range(30, 401, 10))  # 300 candles
    fig = plots.warmup_curve(errors, marks=(60, 100, 150, 300))
    ax, ends_ax = fig.axes
    for line in ax.get_lines()[:2]:
        assert max(line.get_xdata()) == 150  # N needs 2 × N candles: 150 is the last measured
    assert 150 < ax.get_xlim()[1] < 160  # the axis ends there too, no room for N=300
    assert {t.get_text() for t in ax.texts} == {"N=60", "N=100", "N=150"}
    heights = {round(b.get_x() + b.get_width() / 2): b.get_height() for b in ends_ax.patches}
    measured = errors[errors["ends"] > 0]
    assert heights == measured["ends"].to_dict() and heights[150] == 1 and heights[30] == 200
    shown = [t.get_text() for t in ends_ax.texts if t.get_text()]
    assert shown[-1] == "1"  # the count behind the last N is written out
    assert ends_ax.get_ylabel() == "end points"
    assert ends_ax.get_title(loc="right").startswith("N ≥ 160 not measured")
