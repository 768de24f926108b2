"""Matplotlib figures for the notebooks: coverage, gaps, staleness, MACD-V and its warmup.

Every function returns a :class:`~matplotlib.figure.Figure` built with the
object-oriented API (no ``pyplot`` state, no ``show()``), so notebooks display
them and scripts save them with ``fig.savefig``. Times are drawn in UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .macdv import STAGES
from .timeframes import TIMEFRAMES

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


def coverage_heatmap(cov: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Symbols × timeframes, each cell the candle count coloured by its share of the target.

    ``cov`` is a :func:`livermore_nb.coverage.coverage` frame; rows keep its symbol order.
    """
    symbols = list(dict.fromkeys(cov["symbol"]))
    timeframes = _timeframe_order(cov["timeframe"])
    counts = cov.pivot(index="symbol", columns="timeframe", values="candles")
    counts = counts.reindex(index=symbols, columns=timeframes)
    targets = cov.pivot(index="symbol", columns="timeframe", values="target")
    share = (counts / targets.reindex(index=symbols, columns=timeframes)).clip(0, 1)
    fig = Figure(
        figsize=(2.2 + 1.0 * len(timeframes), 1.4 + 0.3 * len(symbols)), layout="constrained"
    )
    ax = fig.add_subplot()
    image = ax.imshow(
        share.to_numpy(dtype=float), cmap="RdYlGn", norm=Normalize(0, 1), aspect="auto"
    )
    for (row, col), value in np.ndenumerate(counts.to_numpy()):
        label = "–" if pd.isna(value) else f"{int(value)}"
        ax.text(col, row, label, ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(timeframes)), timeframes)
    ax.set_yticks(range(len(symbols)), symbols)
    ax.xaxis.tick_top()
    ax.set_xlabel("timeframe")
    ax.xaxis.set_label_position("top")
    ax.set_ylabel("symbol")
    target = int(cov["target"].max()) if len(cov) else 0
    ax.set_title(title or f"Candles in Redis (target {target} per series)", pad=12)
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
        f"{tf}: {len(in_tf)} gaps, {int(in_tf['missing'].sum())} missing periods "
        f"in {len(rows)} of {held} series",
        loc="left",
        fontsize=10,
    )
    _utc_time_axis(ax)


def staleness_chart(cov: pd.DataFrame, *, stale_periods: float = 2.0) -> Figure:
    """Age of each series' newest candle in periods of its timeframe, grouped by symbol.

    Bars past the dashed line (``stale_periods``, as in ``coverage``) are stale;
    empty series are marked "empty".
    """
    symbols = list(dict.fromkeys(cov["symbol"]))
    timeframes = _timeframe_order(cov["timeframe"])
    seconds = cov["timeframe"].map(lambda n: TIMEFRAMES[n].seconds)
    periods = cov["age"].dt.total_seconds() / seconds
    height = 0.8 / len(timeframes)
    fig = Figure(figsize=(9, 1.4 + 0.055 * len(cov) + 0.08 * len(symbols)), layout="constrained")
    ax = fig.add_subplot()
    colors = dict(
        zip(timeframes, ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8"), strict=False)
    )
    row = {s: i for i, s in enumerate(symbols)}
    for tf in timeframes:
        mask = cov["timeframe"] == tf
        offset = (timeframes.index(tf) - (len(timeframes) - 1) / 2) * height
        ys = cov.loc[mask, "symbol"].map(row) + offset
        values = periods[mask]
        stale = cov.loc[mask, "stale"].to_numpy()
        ax.barh(
            ys,
            values.fillna(0).clip(lower=0),
            height=height * 0.9,
            color=colors[tf],
            edgecolor=np.where(stale, "black", "none"),
            label=tf,
        )
        for y in ys[values.isna()]:
            ax.text(0.02, y, "empty", va="center", fontsize=7, color="tab:red")
    ax.axvline(
        stale_periods,
        color="tab:red",
        linestyle="--",
        linewidth=1,
        label=f"stale after {stale_periods:g} periods",
    )
    ax.set_yticks(range(len(symbols)), symbols)
    ax.set_ylim(len(symbols) - 0.5, -0.5)
    ax.set_xlim(
        0, max(stale_periods * 1.25, float(np.nanmax(periods.to_numpy(), initial=0)) * 1.05)
    )
    ax.set_xlabel("age of newest candle (periods of its timeframe since it closed)")
    ax.set_ylabel("symbol")
    as_of = (cov["last"] + pd.to_timedelta(seconds, unit="s") + cov["age"]).dropna()
    when = f" as of {as_of.iloc[0]:%Y-%m-%d %H:%M} UTC" if len(as_of) else ""
    ax.set_title(f"Staleness{when} (black edge = stale)")
    ax.legend(title="timeframe", loc="lower right", fontsize=8)
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


def macdv_panel(frame: pd.DataFrame, indicator: pd.DataFrame, *, title: str = "") -> Figure:
    """Close price over the stage of each bar, and MACD-V with signal, histogram and ±50/±150.

    ``frame`` is the candle frame, ``indicator`` what :func:`livermore_nb.macdv.macdv`
    returned for it.
    """
    fig = Figure(figsize=(11, 6.5), layout="constrained")
    price_ax, macd_ax = fig.subplots(2, 1, sharex=True, height_ratios=[1, 1.2])
    x = _num(frame.index)
    for start, end, stage in _stage_runs(pd.DatetimeIndex(frame.index), indicator["stage"]):
        for ax in (price_ax, macd_ax):
            ax.axvspan(start, end, color=STAGE_COLORS[stage], alpha=0.25, linewidth=0)
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
    """Warmup error against N (log scale), with the usual candle counts and the tolerance.

    ``errors`` is a :func:`livermore_nb.macdv.warmup_errors` frame; N without enough
    history (NaN) or with zero error (nothing to draw on a log axis) are left out.
    """
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for column, style in (("max", "-o"), ("median", "-s")):
        values = errors[column].replace([np.inf, -np.inf], np.nan)
        values = values[values > 0]
        ax.plot(values.index, values, style, markersize=3, label=f"{column} over end points")
    ax.set_yscale("log")
    ax.axhline(
        tolerance, color="tab:red", linestyle="--", linewidth=1, label=f"tolerance {tolerance:g}"
    )
    for mark in marks:
        ax.axvline(mark, color="0.5", linestyle=":", linewidth=1)
        ax.annotate(f"N={mark}", (mark, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -10),
                    textcoords="offset points", fontsize=8, color="0.3")  # fmt: skip
    right = max([*marks, *errors.index]) if len(errors) else max(marks)
    ax.set_xlim(0, right * 1.05)
    ax.set_xlabel("N (newest candles the indicator is computed from)")
    ax.set_ylabel("|MACD-V(N) − MACD-V(full history)| (points)")
    ax.set_title(title or "MACD-V warmup error")
    ax.legend(loc="lower left", fontsize=8)
    return fig
