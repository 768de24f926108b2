"""Matplotlib figures for the notebooks: coverage, gaps, staleness, MACD-V and its warmup.

Every function returns a :class:`~matplotlib.figure.Figure` built with the
object-oriented API (no ``pyplot`` state, no ``show()``), so notebooks display
them and scripts save them with ``fig.savefig``. Times are drawn in UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from .macdv import STAGES, untrusted_bars
from .tables import duration, periods
from .timeframes import STALE_PERIODS, TIMEFRAMES, stale_threshold

__all__ = [
    "STAGE_COLORS",
    "coverage_heatmap",
    "gap_timeline",
    "macdv_panel",
    "staleness_chart",
    "warmup_curve",
]

STAGE_COLORS: dict[str, str] = {
    "oversold": "#1f4e9c",
    "reversing": "#e8833a",
    "rebounding": "#7fc97f",
    "ranging": "#bdbdbd",
    "rallying": "#1a9850",
    "retracing": "#f4a6a6",
    "overbought": "#c62828",
}
"""One colour per MACD-V stage, bearish blues to bullish greens and overbought red."""

TIME_AXIS_LABEL = "time (UTC)"


def _num(times: Sequence[pd.Timestamp] | pd.Index | pd.Series) -> np.ndarray:
    """Datetimes (naive = UTC, or tz-aware) as matplotlib date numbers."""
    index = pd.DatetimeIndex(times)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return np.asarray(mdates.date2num(index.to_numpy()))


def _utc_time_axis(ax: object) -> None:
    """Concise UTC date ticks and the axis label saying so."""
    locator = mdates.AutoDateLocator(tz=UTC)
    ax.xaxis.set_major_locator(locator)  # type: ignore[attr-defined]
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))  # type: ignore[attr-defined]
    ax.set_xlabel(TIME_AXIS_LABEL)  # type: ignore[attr-defined]


def _timeframe_order(names: Sequence[str]) -> list[str]:
    """Timeframe names, shortest first."""
    return sorted(dict.fromkeys(names), key=lambda n: TIMEFRAMES[n].seconds)


HEATMAP_CMAP = colormaps["RdYlGn"]
"""Share of the target: red (none) through yellow to green (all)."""
STALE_HATCH = "///"
"""How stale cells and untrusted warm-up bars are marked: hatched over their colour."""
STALE_STYLE: dict[str, Any] = {
    "fill": False,
    "hatch": STALE_HATCH,
    "edgecolor": "0.15",
    "linewidth": 0.0,
}


def _heatmap_cell(
    ax: object, row: int, col: int, count: float, share: float, stale: object, age: object
) -> None:
    """Write one heatmap cell's count (and age, hatched, when stale) in ink its colour can carry."""
    dark = not np.isnan(share) and not 0.2 <= share <= 0.8
    ink = "white" if dark else "black"
    label = "–" if pd.isna(count) else f"{int(count)}"
    box = None
    if stale is True or stale is np.True_:
        label += "\nempty" if pd.isna(age) else f"\n{duration(age, units=2)} old"
        cell = Rectangle(
            (col - 0.5, row - 0.5), 1, 1, gid="stale", **{**STALE_STYLE, "edgecolor": ink}
        )
        ax.add_patch(cell)  # type: ignore[attr-defined]
        # the cell's own colour behind the words keeps the hatching off them
        fill = "white" if np.isnan(share) else HEATMAP_CMAP(share)
        box = {"boxstyle": "round,pad=0.2", "facecolor": fill, "edgecolor": "none"}
    ax.text(col, row, label, ha="center", va="center", fontsize=8, linespacing=1.0, color=ink,  # type: ignore[attr-defined]
            fontweight="bold" if dark else "normal", bbox=box)  # fmt: skip


def coverage_heatmap(cov: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Symbols × timeframes: each cell the candle count coloured by its share of the target.

    Stale series (``cov["stale"]``) are hatched and say how old their newest candle
    is (or that they are empty). ``cov`` is a :func:`livermore_nb.coverage.coverage`
    frame; rows keep its symbol order.
    """
    symbols = list(dict.fromkeys(cov["symbol"]))
    timeframes = _timeframe_order(cov["timeframe"])

    def grid(column: str) -> pd.DataFrame:
        pivot = cov.pivot(index="symbol", columns="timeframe", values=column)
        return pivot.reindex(index=symbols, columns=timeframes)

    counts, ages, stale = grid("candles"), grid("age"), grid("stale")
    share = (counts / grid("target")).clip(0, 1).to_numpy(dtype=float)
    fig = Figure(
        figsize=(3.4 + 1.05 * len(timeframes), 1.9 + 0.34 * len(symbols)), layout="constrained"
    )
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap=HEATMAP_CMAP, norm=Normalize(0, 1), aspect="auto")
    for (row, col), value in np.ndenumerate(counts.to_numpy()):
        _heatmap_cell(ax, row, col, value, share[row, col], stale.iat[row, col], ages.iat[row, col])
    ax.set_xticks(range(len(timeframes)), timeframes, fontsize=10)
    ax.set_yticks(range(len(symbols)), symbols, fontsize=9)
    ax.xaxis.tick_top()
    ax.set_xlabel("timeframe")
    ax.xaxis.set_label_position("top")
    ax.set_ylabel("symbol")
    target = int(cov["target"].max()) if len(cov) else 0
    n_stale = int(cov["stale"].sum())
    ax.set_title(
        title or f"Candles in Redis (target {target}); {n_stale} of {len(cov)} series stale",
        pad=12,
    )
    stale_key = Patch(label="stale: newest candle too old (its age shown) or empty", **STALE_STYLE)
    fig.legend(handles=[stale_key], loc="outside lower left", frameon=False, fontsize=9)
    colorbar = fig.colorbar(image, ax=ax, shrink=min(1.0, 8 / max(len(symbols), 1)) + 0.2)
    colorbar.set_label("share of target")
    colorbar.ax.yaxis.set_major_formatter("{x:.0%}")
    return fig


def gap_timeline(
    cov: pd.DataFrame, gaps: pd.DataFrame, *, only_gappy: bool = True, title: str | None = None
) -> Figure:
    """One panel per timeframe, one row per series: cached span in grey, missing periods in red.

    ``cov`` and ``gaps`` come from :func:`~livermore_nb.coverage.summarize` and
    :func:`~livermore_nb.coverage.series_gaps`; with ``only_gappy`` only series
    that have gaps get a row (the panel title counts the others).
    """
    gappy = set(zip(gaps["symbol"], gaps["timeframe"], strict=True))
    held = cov[cov["candles"] > 0]
    timeframes = [
        tf
        for tf in _timeframe_order(held["timeframe"])
        if not only_gappy or any(t == tf for _, t in gappy)
    ]
    if not timeframes:
        fig = Figure(figsize=(8, 1.6), layout="constrained")
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.set_title(title or "Gaps in cached series")
        ax.text(0.5, 0.5, f"no gaps in {len(held)} cached series", ha="center", va="center")
        return fig
    panels = []
    for tf in timeframes:
        rows = held[held["timeframe"] == tf]
        if only_gappy:
            rows = rows[[(s, tf) in gappy for s in rows["symbol"]]]
        panels.append((tf, rows))
    heights = [0.6 + 0.32 * len(rows) for _, rows in panels]
    fig = Figure(figsize=(10, 1.0 + sum(heights)), layout="constrained")
    axes = fig.subplots(len(panels), 1, height_ratios=heights, squeeze=False)[:, 0]
    for ax, (tf, rows) in zip(axes, panels, strict=True):
        _gap_panel(ax, tf, rows, gaps, len(held[held["timeframe"] == tf]))
    axes[0].legend(
        handles=[Patch(color="0.8", label="cached span"), Patch(color="tab:red", label="missing")],
        loc="lower left",
        bbox_to_anchor=(0, 1.15),
        ncols=2,
        frameon=False,
    )
    fig.suptitle(title or "Gaps in cached series (missing periods between first and last)")
    return fig


def _gap_panel(ax: object, tf: str, rows: pd.DataFrame, gaps: pd.DataFrame, held: int) -> None:
    """Draw one timeframe's rows of the gap timeline."""
    period_days = TIMEFRAMES[tf].seconds / 86400
    firsts, lasts = _num(rows["first"]), _num(rows["last"])
    for y, (symbol, first, last) in enumerate(zip(rows["symbol"], firsts, lasts, strict=True)):
        ax.broken_barh([(first, last + period_days - first)], (y - 0.35, 0.7), color="0.8")  # type: ignore[attr-defined]
        own = gaps[(gaps["symbol"] == symbol) & (gaps["timeframe"] == tf)]
        starts, ends = _num(own["start"]), _num(own["end"])
        ax.broken_barh(  # type: ignore[attr-defined]
            list(zip(starts, ends - starts, strict=True)),
            (y - 0.35, 0.7),
            facecolor="tab:red",
            edgecolor="tab:red",
            linewidth=0.6,
        )
    ax.set_yticks(range(len(rows)), list(rows["symbol"]))  # type: ignore[attr-defined]
    ax.set_ylim(len(rows) - 0.5, -0.5)  # type: ignore[attr-defined]
    in_tf = gaps[gaps["timeframe"] == tf]
    ax.set_title(  # type: ignore[attr-defined]
        f"{tf}: {len(in_tf)} gaps, {periods(int(in_tf['missing'].sum()), tf)} missing "
        f"in {len(rows)} of {held} series",
        loc="left",
        fontsize=10,
    )
    _utc_time_axis(ax)


def staleness_chart(cov: pd.DataFrame, *, stale_periods: float = STALE_PERIODS) -> Figure:
    """Age of each series' newest candle in periods of its timeframe, grouped by symbol.

    Each bar carries a tick at its own stale threshold, max(``stale_periods``, 2 × the
    series' largest gap) (:func:`~livermore_nb.timeframes.stale_threshold`), and is
    hatched when ``cov["stale"]`` says so; empty series are marked "empty".
    """
    symbols = list(dict.fromkeys(cov["symbol"]))
    timeframes = _timeframe_order(cov["timeframe"])
    seconds = cov["timeframe"].map(lambda n: TIMEFRAMES[n].seconds)
    periods = cov["age"].dt.total_seconds() / seconds
    thresholds = cov["largest_gap"].map(lambda gap: stale_threshold(gap, stale_periods))
    height = 0.8 / len(timeframes)
    fig = Figure(figsize=(9, 1.6 + 0.055 * len(cov) + 0.08 * len(symbols)), layout="constrained")
    ax = fig.add_subplot()
    colors = dict(
        zip(timeframes, ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8"), strict=False)
    )
    row = {s: i for i, s in enumerate(symbols)}
    mark_x: list[float] = []
    mark_y: list[float] = []
    for tf in timeframes:
        mask = cov["timeframe"] == tf
        offset = (timeframes.index(tf) - (len(timeframes) - 1) / 2) * height
        ys = cov.loc[mask, "symbol"].map(row) + offset
        values = periods[mask]
        bars = ax.barh(ys, values.fillna(0).clip(lower=0), height=height * 0.9, color=colors[tf],
                       label=tf)  # fmt: skip
        for bar, stale in zip(bars, cov.loc[mask, "stale"], strict=True):
            if stale:
                bar.set(hatch=STALE_HATCH, edgecolor="black", linewidth=0.6)
        mark_x += list(thresholds[mask][values.notna()])
        mark_y += list(ys[values.notna()])
        for y in ys[values.isna()]:
            ax.text(0.02, y, "empty", va="center", fontsize=7, color="tab:red")
    ax.plot(mark_x, mark_y, linestyle="none", marker="|", markersize=7, markeredgewidth=1.4,
            color="black", gid="stale-threshold")  # fmt: skip
    ax.set_yticks(range(len(symbols)), symbols)
    ax.set_ylim(len(symbols) - 0.5, -0.5)
    furthest = max(float(np.nanmax(periods.to_numpy(), initial=0)), max(mark_x, default=0) * 1.15)
    ax.set_xlim(0, max(stale_periods * 1.25, furthest * 1.05))
    ax.set_xlabel("age of newest candle (periods of its timeframe since it closed)")
    ax.set_ylabel("symbol")
    as_of = (cov["last"] + pd.to_timedelta(seconds, unit="s") + cov["age"]).dropna()
    when = f" as of {as_of.iloc[0]:%Y-%m-%d %H:%M} UTC" if len(as_of) else ""
    ax.set_title(f"Staleness{when} (hatched = stale)")
    # Outside the axes: bars may reach any corner, so no place inside is always free.
    ax.legend(handles=[Patch(color=colors[tf], label=tf) for tf in timeframes], title="timeframe",
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # fmt: skip
    keys = [
        Line2D([], [], linestyle="none", marker="|", markersize=7, markeredgewidth=1.4,
               color="black", label=f"stale after max({stale_periods:g}, 2 × largest gap) periods"),
        Patch(facecolor="0.85", hatch=STALE_HATCH, edgecolor="black", label="stale (hatched)"),
    ]  # fmt: skip
    fig.legend(handles=keys, loc="outside lower left", ncols=2, frameon=False, fontsize=9)
    return fig


def _stage_runs(index: pd.DatetimeIndex, stage: pd.Series) -> list[tuple[float, float, str]]:
    """(start, end, stage) spans of consecutive bars in the same stage, as date numbers."""
    x = _num(index)
    step = float(np.median(np.diff(x))) if len(x) > 1 else 1.0
    runs: list[tuple[float, float, str]] = []
    values = list(stage)
    start = 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            if values[start] is not None:
                runs.append((x[start] - step / 2, x[i - 1] + step / 2, values[start]))
            start = i
    return runs


def _warmup_span(
    price_ax: object, macd_ax: object, x: np.ndarray, min_candles: int | None
) -> list[Patch]:
    """Wash out and hatch the untrusted leading bars on both axes; the legend handle, if any."""
    bars = untrusted_bars(len(x), min_candles) if min_candles is not None else 0
    if not bars:
        return []
    half = (float(np.median(np.diff(x))) if len(x) > 1 else 1.0) / 2
    style: dict[str, Any] = {
        "facecolor": "white",
        "alpha": 0.6,
        "hatch": STALE_HATCH,
        "edgecolor": "0.45",
    }
    for ax in (price_ax, macd_ax):
        ax.axvspan(x[0] - half, x[bars - 1] + half, linewidth=0, gid="warmup", **style)  # type: ignore[attr-defined]
    label = f"warm-up: first {bars} bars rest on < {min_candles} candles (untrusted)"
    return [Patch(label=label, **style)]


def macdv_panel(
    frame: pd.DataFrame,
    indicator: pd.DataFrame,
    *,
    title: str = "",
    min_candles: int | None = None,
) -> Figure:
    """Close price over the stage of each bar, and MACD-V with signal, histogram and ±50/±150.

    ``frame`` is the candle frame, ``indicator`` what :func:`livermore_nb.macdv.macdv`
    returned for it. With ``min_candles`` the leading bars whose value rests on fewer
    candles (:func:`~livermore_nb.macdv.untrusted_bars`, the readiness gate's rule)
    are washed out and hatched as warm-up.
    """
    fig = Figure(figsize=(11, 6.5), layout="constrained")
    price_ax, macd_ax = fig.subplots(2, 1, sharex=True, height_ratios=[1, 1.2])
    x = _num(frame.index)
    for start, end, stage in _stage_runs(pd.DatetimeIndex(frame.index), indicator["stage"]):
        for ax in (price_ax, macd_ax):
            ax.axvspan(start, end, color=STAGE_COLORS[stage], alpha=0.25, linewidth=0)
    warmup = _warmup_span(price_ax, macd_ax, x, min_candles)
    price_ax.plot(x, frame["close"], color="black", linewidth=1, label="close")
    price_ax.set_ylabel("close (quote currency)")
    present = [s for s in STAGES if s in set(indicator["stage"].dropna())]
    price_ax.legend(
        handles=[Patch(color=STAGE_COLORS[s], alpha=0.5, label=s) for s in present],
        title="stage",
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=8,
    )
    price_ax.set_title(title or "MACD-V")
    width = float(np.median(np.diff(x))) * 0.8 if len(x) > 1 else 0.01
    hist = indicator["histogram"].to_numpy(dtype=float)
    macd_ax.bar(
        x,
        hist,
        width=width,
        color=np.where(hist >= 0, "tab:green", "tab:red"),
        alpha=0.6,
    )
    macd_ax.plot(x, indicator["macdv"], color="tab:blue", linewidth=1.2, label="MACD-V")
    macd_ax.plot(x, indicator["signal"], color="tab:orange", linewidth=1, label="signal (EMA 9)")
    for level, style in ((150, ":"), (50, "--"), (-50, "--"), (-150, ":")):
        macd_ax.axhline(level, color="0.3", linestyle=style, linewidth=0.8)
    macd_ax.set_yticks([-150, -50, 0, 50, 150])
    macd_ax.set_ylabel("MACD-V (points)")
    handles = [*macd_ax.get_lines()[:2], Patch(color="0.6", label="histogram (MACD-V − signal)")]
    handles += warmup
    macd_ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    _utc_time_axis(macd_ax)
    return fig


def warmup_curve(
    errors: pd.DataFrame,
    *,
    tolerance: float = 0.5,
    marks: Sequence[int] = (60, 100, 150, 300),
    title: str = "",
) -> Figure:
    """Warmup error against N (log scale) over the end points each N rests on.

    ``errors`` is a :func:`livermore_nb.macdv.warmup_errors` frame. The N axis stops
    at the largest N the history could measure (it needs ``reference_factor × N``
    candles), so nothing is drawn past the data; marks beyond it are left out and
    the lower panel counts the end points behind each N's median and max. Zero or
    infinite errors (nothing to draw on a log axis) leave a break in the line.
    """
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax, ends_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    measured = errors[errors["ends"] > 0]
    for column, style in (("max", "-o"), ("median", "-s")):
        values = measured[column].replace([np.inf, -np.inf], np.nan)
        values = values.where(values > 0)
        ax.plot(values.index, values, style, markersize=3, label=f"{column} over end points")
    ax.set_yscale("log")
    ax.axhline(
        tolerance, color="tab:red", linestyle="--", linewidth=1, label=f"tolerance {tolerance:g}"
    )
    last = int(measured.index.max()) if len(measured) else 0
    step = float(np.min(np.diff(measured.index))) if len(measured) > 1 else max(last, 1) * 0.05
    for mark in (m for m in marks if m <= last):
        for axis in (ax, ends_ax):
            axis.axvline(mark, color="0.5", linestyle=":", linewidth=1)
        ax.annotate(f"N={mark}", (mark, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -10),
                    textcoords="offset points", fontsize=8, color="0.3")  # fmt: skip
    bars = ends_ax.bar(measured.index, measured["ends"], width=step * 0.8, color="0.55")
    counts = measured["ends"].to_numpy()
    few = (counts < 0.1 * counts.max(initial=0)) | (np.arange(len(counts)) == len(counts) - 1)
    ends_ax.bar_label(bars, [f"{c}" if f else "" for c, f in zip(counts, few, strict=True)],
                      fontsize=7, padding=1)  # fmt: skip
    ends_ax.set_ylabel("end points")
    ends_ax.set_ylim(0, max(1, int(measured["ends"].max())) * 1.15 if len(measured) else 1)
    unmeasured = errors.index[errors["ends"] == 0]
    if len(unmeasured):
        ends_ax.set_title(
            f"N ≥ {int(unmeasured.min())} not measured: the history is too short",
            loc="right", fontsize=8, color="0.3",
        )  # fmt: skip
    ax.set_xlim(0, last + 0.6 * step if last else 1)  # short of the first unmeasured N
    ends_ax.set_xlabel("N (newest candles the indicator is computed from)")
    ax.set_ylabel("|MACD-V(N) − MACD-V(full history)| (points)")
    ax.set_title(title or "MACD-V warmup error")
    ax.legend(loc="lower left", fontsize=8)
    return fig
