"""How many cached candles MACD-V needs: the figures behind the 300-candle default and 150 gate.

For every recorded product and timeframe, MACD-V computed from only the newest N candles is
compared with MACD-V from the full history, at each of the last ``--ends`` candles (see
``livermore_nb.macdv.warmup_errors``), and the N needed for errors below 1 and 0.1 points.

    .venv/bin/python -m benchmarks.warmup --data livermore_nb/data --out docs/warmup.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from livermore_nb.candles import read_recorded_csv, resample
from livermore_nb.macdv import find_gaps, macdv, min_candles_for, warmup_errors
from livermore_nb.timeframes import TIMEFRAMES

COMMAND = ".venv/bin/python -m benchmarks.warmup --data livermore_nb/data --out docs/warmup.md"
NS = range(30, 401, 10)
SHOWN = (60, 100, 150, 200, 300)
TIMEFRAMES_MEASURED = ("5m", "15m", "1h", "4h")
PACKAGED = Path(__file__).resolve().parents[1] / "livermore_nb" / "data"


def load(data: Path) -> dict[str, pd.DataFrame]:
    """Product → its 1-minute frame, for every recorded CSV in ``data``."""
    paths = sorted(data.glob("*.csv.gz")) + sorted(data.glob("*.csv"))
    if not paths:
        raise SystemExit(f"no recorded CSV files in {data}")
    return {p.name.split(".csv")[0]: read_recorded_csv(p) for p in paths}


def to_markdown(frame: pd.DataFrame) -> str:
    """A pipe table (pandas' own needs tabulate, which is not a dependency)."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |"]
    lines.append("|" + "---|" * len(frame.columns))
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def needed(errors: pd.DataFrame, tolerance: float) -> str:
    """N needed for ``tolerance``: a number ('*': history cut the scan short), '> N', 'n/a'."""
    measured = errors["max"].dropna()
    if measured.empty:
        return "n/a"
    n = min_candles_for(errors, tolerance)
    if n is None:
        return f"> {measured.index.max()}"
    return f"{n}*" if measured.index.max() < max(NS) else str(n)


def cell(errors: pd.DataFrame, n: int) -> str:
    """``median / max`` error at ``n`` or '—' when the history cannot measure it."""
    if errors.loc[n, "ends"] == 0:
        return "—"
    return f"{errors.loc[n, 'median']:.3g} / {errors.loc[n, 'max']:.3g}"


def warmup_table(minutes: dict[str, pd.DataFrame], ends: int) -> pd.DataFrame:
    """One row per product and timeframe with the shown errors and the N needed."""
    rows = []
    for product, minute in minutes.items():
        for name in TIMEFRAMES_MEASURED:
            seconds = TIMEFRAMES[name].seconds
            frame = resample(minute, seconds)
            missing = int(find_gaps(frame, seconds)["missing"].sum())
            errors = warmup_errors(frame, NS, ends=ends)
            row = {
                "product": product,
                "tf": name,
                "candles": len(frame),
                "missing %": f"{100 * missing / (missing + len(frame)):.0f}",
            }
            row |= {f"N={n}": cell(errors, n) for n in SHOWN}
            row |= {"N for <1": needed(errors, 1.0), "N for <0.1": needed(errors, 0.1)}
            rows.append((row, errors))
    table = pd.DataFrame([r for r, _ in rows])
    table.attrs["errors"] = {(r["product"], r["tf"]): e for r, e in rows}
    return table


def gap_table(minutes: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """5m |MACD-V| tails with and without ``skip_gaps``, to show what the option does."""
    rows = []
    for product, minute in minutes.items():
        frame = resample(minute, 300)
        stats = {}
        for skip in (False, True):
            values = macdv(frame, skip_gaps=skip, timeframe_seconds=300)["macdv"].abs().dropna()
            key = "skip_gaps" if skip else "default"
            stats[f"p99 {key}"] = f"{np.percentile(values, 99):.0f}"
            stats[f"share >150 {key}"] = f"{100 * (values > 150).mean():.1f} %"
        flat = 100 * (frame["high"] == frame["low"]).mean()
        gaps = len(find_gaps(frame, 300))
        rows.append({"product": product, "gaps": gaps, "H=L %": f"{flat:.0f}", **stats})
    return pd.DataFrame(rows)


def worst(table: pd.DataFrame, products: list[str], tfs: tuple[str, ...], n: int) -> float:
    """Largest max error at ``n`` over the given series (NaN if none measured it)."""
    errors = table.attrs["errors"]
    values = [errors[(p, tf)].loc[n, "max"] for p in products for tf in tfs]
    return float(np.nanmax(values)) if not np.isnan(values).all() else float("nan")


def interpretation(table: pd.DataFrame, daily: dict[str, int]) -> str:
    """A few sentences read off the table (numbers computed, not typed)."""
    products = sorted({str(p) for p in table["product"]})
    full = ("5m", "15m", "1h")
    w = {n: worst(table, products, full, n) for n in (60, 100, 150, 200, 300)}
    scanned = table[table["tf"].isin(full)]
    need1 = scanned["N for <1"].str.rstrip("*").astype(int)
    need01 = scanned["N for <0.1"].str.rstrip("*").astype(int)
    return (
        f"Over every product at 5m, 15m and 1h (history enough for N up to 380–400), the worst "
        f"error at the last {table.attrs['ends']} end points is {w[60]:.3g} points at N=60, "
        f"{w[100]:.3g} at N=100, {w[150]:.3g} at N=150, {w[200]:.3g} at N=200 and "
        f"{w[300]:.2g} at N=300, with medians several times smaller. "
        f"Staying below 1 point needs {need1.min()}–{need1.max()} candles and below 0.1 "
        f"point {need01.min()}–{need01.max()}, so the seed plan's 60 candles (errors of "
        "several points) and even 100 (above a point in the worst case) are not enough. "
        f"The data support the 150-candle gate as a readiness floor ({w[150]:.2g} points worst "
        "case, a few hundredths typical) and the 300-candle default, which matches the full "
        f"history to {w[300]:.1g} points for the same single request per series. "
        "The 4h series hold only ~195 candles here (XTZ-USD 530), so N above half the history "
        "is not measured ('—', '*'); daily series have "
        f"{min(daily.values())}–{max(daily.values())} candles, below the 150 gate, and are "
        "not analysed rather than extrapolated."
    )


def markdown(table: pd.DataFrame, gaps: pd.DataFrame, daily: dict[str, int], ends: int) -> str:
    """The published page: command, method, tables and interpretation."""
    return "\n".join(
        [
            "# MACD-V warmup: how many candles are enough",
            "",
            "Generated by (from the repository root):",
            "",
            f"    {COMMAND}",
            "",
            "MACD-V(12, 26, ATR 26, signal 9) from only the newest N candles versus from the "
            f"full history, at each of the last {ends} candles that have at least 2×N candles "
            "of history (so the reference is itself warm). Cells: median / max absolute error "
            "in MACD-V points; '—' = not enough history to measure. 'N for <1' is the "
            "smallest N (step 10, 30–400) from which the max error stays below 1 point for "
            "every larger N measured ('*': the history stopped the scan early). "
            "Candles are the recorded 1-minute Coinbase data (Nov–Dec 2023) "
            "aggregated with `candles.resample`.",
            "",
            to_markdown(table),
            "",
            "Daily candles in the recording (too few to analyse): "
            + ", ".join(f"{p} {n}" for p, n in daily.items())
            + ".",
            "",
            "## Interpretation",
            "",
            interpretation(table, daily),
            "",
            "## Gaps (5m): what `skip_gaps=True` does",
            "",
            "With `skip_gaps=True` the bar after a gap takes TR = H−L instead of reaching back "
            "to the stale close; the ATR can only fall, so |MACD-V| can only grow:",
            "",
            to_markdown(gaps),
            "",
            "On the illiquid XTZ-USD the jump from the last traded close is what keeps the "
            "ATR honest (its candles often have H = L, one trade or one price), so the default "
            "(`skip_gaps=False`) is the one that avoids an inflated MACD-V.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    """Compute the tables, print them and optionally write the markdown page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = PACKAGED
    parser.add_argument("--data", type=Path, default=default, help="folder of recorded CSVs")
    parser.add_argument("--out", type=Path, help="write the markdown page here")
    parser.add_argument("--ends", type=int, default=200, help="end points per series")
    args = parser.parse_args(argv)
    minutes = load(args.data)
    table = warmup_table(minutes, args.ends)
    table.attrs["ends"] = args.ends
    gaps = gap_table(minutes)
    daily = {p: len(resample(m, TIMEFRAMES["1d"].seconds)) for p, m in minutes.items()}
    page = markdown(table, gaps, daily, args.ends)
    print(page)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(page)


if __name__ == "__main__":
    main()
