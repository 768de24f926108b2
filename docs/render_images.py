"""Render the README's example figures into ``docs/img`` (``make images``).

Fills an embedded Redis (a temporary one) from the emulator *without* extended
history, so the recorded products' 4h and 1d series show their real shortfall,
then draws each figure of :mod:`livermore_nb.plots` once.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

TIMEFRAMES = "5m,15m,1h,4h,1d"


def main(out: Path) -> None:
    """Fill, then write the five PNGs to ``out``."""
    os.environ["LIVERMORE_REDIS_DB"] = str(Path(tempfile.mkdtemp()) / "redis.db")
    os.environ.pop("REDIS_URL", None)
    from livermore_nb import BackfillConfig, plots
    from livermore_nb.candles import read_recorded_csv, resample
    from livermore_nb.coverage import load_series, series_gaps, summarize
    from livermore_nb.demo import DEMO_SYMBOLS, backfill_offline
    from livermore_nb.emulator.config import PACKAGED_DATA
    from livermore_nb.macdv import macdv, warmup_errors

    config = BackfillConfig(symbols=DEMO_SYMBOLS, timeframes=TIMEFRAMES)
    asyncio.run(backfill_offline(config, extend_history=False))
    frames = load_series(None, DEMO_SYMBOLS, TIMEFRAMES)
    cov = summarize(frames)
    out.mkdir(parents=True, exist_ok=True)
    plots.coverage_heatmap(cov).savefig(out / "coverage_heatmap.png", dpi=100)
    plots.gap_timeline(cov, series_gaps(frames)).savefig(out / "gap_timeline.png", dpi=100)
    plots.staleness_chart(cov).savefig(out / "staleness.png", dpi=100)
    btc = frames[("BTC-USD", "1h")]
    panel = plots.macdv_panel(btc, macdv(btc), title="BTC-USD 1h", min_candles=config.min_candles)
    panel.savefig(out / "macdv_panel.png", dpi=100)
    recorded = resample(read_recorded_csv(PACKAGED_DATA / "BTC-USD.csv.gz"), 300)
    plots.warmup_curve(warmup_errors(recorded), title="BTC-USD 5m (recorded)").savefig(
        out / "warmup_curve.png", dpi=100
    )
    print(f"wrote 5 figures to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img"))
