"""The candles behind the emulator: recorded minutes shifted to now, and seeded synthetic walks.

Recorded products are the 1-minute CSVs, shifted by a whole number of minutes so
their newest minute is the minute holding the anchor, then aggregated to each
granularity (``candles.resample``) once and cached. Synthetic products are
geometric random walks generated per granularity, block by block, only for the
requested window: the walk's level at block boundaries is a cumulative sum of
per-block steps, and inside a block a Brownian bridge joins the two boundaries,
so any window costs O(window) and is the same whichever way it is asked for.
"""

from __future__ import annotations

import functools
import math
import re
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ..candles import read_recorded_csv, resample
from .config import SYNTHETIC_PRICES, EmulatorConfig

SYNTHETIC_PATTERN = re.compile(r"SYN\d+-USD")
"""Any product named like this is a synthetic product (for scale benchmarks)."""
BLOCK = 512
"""Buckets per Brownian-bridge block (≥ 350, so a page touches at most two blocks)."""
CHUNK = 1024
"""Block-level steps drawn per chunk."""
DAY = 86400
USD_PER_DAY = 5e6
"""Typical traded value per day; sets synthetic volume."""


class Bars(NamedTuple):
    """Candles of one series as parallel arrays, oldest first; ``start`` in UNIX seconds."""

    start: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def window(self, lo: float, hi: float) -> Bars:
        """The bars with ``lo <= start < hi``."""
        i, j = np.searchsorted(self.start, [lo, hi])
        return Bars(*(a[i:j] for a in self))

    def where(self, mask: np.ndarray) -> Bars:
        """The bars where ``mask`` is true."""
        return Bars(*(a[mask] for a in self))


def concat(parts: Iterable[Bars]) -> Bars:
    """Join bar sets that are already in time order."""
    return Bars(*(np.concatenate(cols) for cols in zip(*parts, strict=True)))


EMPTY = Bars(np.empty(0, dtype="int64"), *(np.empty(0) for _ in range(5)))


def bars_from_frame(frame: pd.DataFrame) -> Bars:
    """A candle frame (UTC index ``time``) → Bars."""
    start = pd.DatetimeIndex(frame.index).as_unit("s").asi8
    cols = [frame[c].to_numpy(dtype="float64") for c in ("open", "high", "low", "close", "volume")]
    return Bars(start, *cols)


@functools.lru_cache(maxsize=32)
def load_recorded(path: Path) -> pd.DataFrame:
    """Read one recorded CSV once per process (the frame is shared: never modify it)."""
    return read_recorded_csv(path)


def recorded_files(folder: Path) -> dict[str, Path]:
    """``{PRODUCT}.csv[.gz]`` files in ``folder`` → product → path."""
    return {p.name.split(".")[0]: p for p in sorted(folder.glob("*.csv*"))}


class RecordedSeries:
    """One recorded product, shifted so its newest minute is the anchor's minute."""

    def __init__(self, path: Path, anchor: float) -> None:
        frame = load_recorded(path)
        last = int(frame.index[-1].timestamp())
        self.shift_s = int(anchor // 60) * 60 - last
        self.minutes = frame.set_axis(frame.index + pd.Timedelta(seconds=self.shift_s))
        self._bars: dict[int, Bars] = {}

    @property
    def first(self) -> int:
        """Start of the oldest recorded minute, after the shift."""
        return int(self.minutes.index[0].timestamp())

    @property
    def last(self) -> int:
        """Start of the newest recorded minute, after the shift (the anchor's minute)."""
        return int(self.minutes.index[-1].timestamp())

    def bars(self, seconds: int) -> Bars:
        """All buckets of ``seconds`` (UTC-aligned), aggregated once and cached.

        Summed volume is rounded to 8 decimals, as Coinbase reports base volume.
        """
        if seconds not in self._bars:
            bars = bars_from_frame(resample(self.minutes, seconds))
            self._bars[seconds] = bars._replace(volume=np.round(bars.volume, 8))
        return self._bars[seconds]


class Walk:
    """A seeded geometric random walk over the buckets of one granularity.

    Bucket ``i`` starts at ``first + i * seconds``; the log price at the start of
    bucket ``ref_start`` is ``log(ref_price)``. A bucket's open is the previous
    close; high and low reach beyond them by a random fraction of a step.
    """

    def __init__(
        self,
        *,
        key: tuple[int, ...],
        seconds: int,
        first: int,
        ref_start: int,
        ref_price: float,
        volume: float,
        daily_volatility: float,
        gap_rate: float,
    ) -> None:
        self.key, self.seconds, self.first = key, seconds, first
        self.sigma = daily_volatility * math.sqrt(seconds / DAY)
        self.volume, self.gap_rate = volume, gap_rate
        self.decimals = max(0, 6 - math.floor(math.log10(ref_price)))  # 7 significant digits
        self._levels = np.zeros(1)
        ref = (ref_start - first) // seconds
        self.offset = math.log(ref_price) - self._log_levels(ref, ref)[0][0]

    def _boundaries(self, block: int) -> np.ndarray:
        """Cumulative log level at block boundaries, long enough to include ``block + 1``."""
        while len(self._levels) <= block + 1:
            chunk = (len(self._levels) - 1) // CHUNK
            rng = np.random.default_rng([*self.key, 0, chunk])
            steps = rng.standard_normal(CHUNK) * self.sigma * math.sqrt(BLOCK)
            self._levels = np.concatenate([self._levels, self._levels[-1] + np.cumsum(steps)])
        return self._levels

    def _block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """Log level at the start of each bucket of ``block``, and per-bucket noise rows."""
        levels = self._boundaries(block)
        rng = np.random.default_rng([*self.key, 1, block])
        noise = rng.standard_normal((5, BLOCK))
        walk = np.cumsum(noise[0]) * self.sigma
        target = levels[block + 1] - levels[block]
        bridge = walk - np.arange(1, BLOCK + 1) / BLOCK * (walk[-1] - target)
        start_levels = levels[block] + np.concatenate(([0.0], bridge[:-1]))
        return start_levels, np.vstack([noise[1:], rng.random(BLOCK)])

    def _log_levels(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Log levels at bucket starts ``lo..hi`` (inclusive) and noise for buckets ``lo..hi-1``."""
        blocks = [self._block(b) for b in range(lo // BLOCK, hi // BLOCK + 1)]
        base = lo // BLOCK * BLOCK
        levels = np.concatenate([lv for lv, _ in blocks])[lo - base : hi - base + 1]
        noise = np.concatenate([nz for _, nz in blocks], axis=1)[:, lo - base : hi - base]
        return levels, noise

    def bars(self, lo: float, hi: float, now: float) -> Bars:
        """Traded buckets with ``lo <= start < hi`` that have opened by ``now``.

        The bucket holding ``now`` is the open candle: its close, range and volume
        are those of the walk so far (a fraction ``f`` of the bucket), and equal
        the closed candle's at ``f = 1``.
        """
        g = self.seconds
        hi = min(hi, now // g * g + g)
        i_lo = max(0, math.ceil((lo - self.first) / g))
        i_hi = math.ceil((hi - self.first) / g)
        if i_hi <= i_lo:
            return EMPTY
        levels, (z_high, z_low, z_vol, z_close, gap) = self._log_levels(i_lo, i_hi)
        start = self.first + g * np.arange(i_lo, i_hi, dtype="int64")
        frac = np.clip((now - start) / g, 0.0, 1.0)
        lo_open = levels[:-1] + self.offset
        lo_close = lo_open + frac * (levels[1:] - levels[:-1])
        lo_close += np.sqrt(frac * (1 - frac)) * self.sigma * z_close
        reach = 0.6 * self.sigma * np.sqrt(frac)
        lo_high = np.maximum(lo_open, lo_close) + reach * np.abs(z_high)
        lo_low = np.minimum(lo_open, lo_close) - reach * np.abs(z_low)
        tick = 10.0**-self.decimals
        open_, high, low, close = (
            np.maximum(np.round(np.exp(x), self.decimals), tick)
            for x in (lo_open, lo_high, lo_low, lo_close)
        )
        volume = np.maximum(np.round(self.volume * np.exp(0.5 * z_vol) * frac, 8), 1e-8)
        return Bars(start, open_, high, low, close, volume).where(gap >= self.gap_rate)


def product_seed(product: str) -> int:
    """A stable number for a product name (``hash()`` is salted per process)."""
    return zlib.crc32(product.encode())


def reference_price(product: str) -> float:
    """The price "now" of a synthetic product: the table's, else one derived from the name."""
    return SYNTHETIC_PRICES.get(product, 10 ** (product_seed(product) % 600 / 100 - 2))


def iso(epoch_s: float) -> str:
    """UNIX seconds → ISO 8601 UTC text, to the second."""
    return pd.Timestamp(int(epoch_s), unit="s", tz="UTC").isoformat()


class Catalog:
    """Every product the emulator serves and the bars of each (product, granularity)."""

    def __init__(self, config: EmulatorConfig, anchor: float) -> None:
        self.config, self.anchor = config, anchor
        self._files = recorded_files(config.data_path())
        self._recorded: dict[str, RecordedSeries] = {}
        self._walks: dict[tuple[str, int], Walk] = {}

    def products(self) -> list[str]:
        """Recorded products, then the listed synthetic ones (``SYN<n>-USD`` also exist)."""
        return list(dict.fromkeys([*self._files, *self.config.synthetic]))

    def knows(self, product: str) -> bool:
        """True when ``product`` is served."""
        return (
            product in self._files
            or product in self.config.synthetic
            or bool(SYNTHETIC_PATTERN.fullmatch(product))
        )

    def recorded(self, product: str) -> RecordedSeries:
        """The recorded series of ``product`` (loaded on first use)."""
        if product not in self._recorded:
            self._recorded[product] = RecordedSeries(self._files[product], self.anchor)
        return self._recorded[product]

    def bars(self, product: str, seconds: int, lo: float, hi: float, now: float) -> Bars:
        """Traded buckets of ``product`` with ``lo <= start < hi`` opened by ``now``."""
        if product not in self._files:
            return self._walk(product, seconds).bars(lo, hi, now)
        series = self.recorded(product).bars(seconds)
        recorded = series.window(lo, min(hi, now + 1))
        if not self.config.extend_history or not len(series.start):
            return recorded
        boundary = int(series.start[0])
        synthetic = self._walk(product, seconds).bars(lo, min(hi, boundary), now)
        return concat([synthetic, recorded])

    def _walk(self, product: str, seconds: int) -> Walk:
        """The synthetic walk of (product, granularity), created on first use."""
        if (product, seconds) not in self._walks:
            self._walks[product, seconds] = Walk(**self._walk_params(product, seconds))
        return self._walks[product, seconds]

    def _walk_params(self, product: str, seconds: int) -> dict[str, Any]:
        """Where a walk starts and ends: at now's price, or at a recorded series' first open."""
        cfg = self.config
        if product in self._files:  # extended history: end at the first recorded open
            series = self.recorded(product).bars(seconds)
            ref_start, ref_price = int(series.start[0]), float(series.open[0])
            volume = float(np.median(series.volume))
        else:
            ref_start = int(self.anchor // seconds * seconds)
            ref_price = reference_price(product)
            volume = USD_PER_DAY / ref_price * seconds / DAY
        return {
            "key": (cfg.seed, product_seed(product), seconds),
            "seconds": seconds,
            "first": (ref_start - cfg.history_days * DAY) // seconds * seconds,
            "ref_start": ref_start,
            "ref_price": ref_price,
            "volume": volume,
            "daily_volatility": cfg.daily_volatility,
            "gap_rate": cfg.illiquid_gap_rate if product in cfg.illiquid else 0.0,
        }

    def describe(self) -> dict[str, Any]:
        """Per product: where its candles come from, and which part of history is synthetic."""
        return {
            "anchor": iso(self.anchor),
            "synthetic_pattern": "SYN<digits>-USD",
            "products": [self._describe(p) for p in self.products()],
        }

    def _describe(self, product: str) -> dict[str, Any]:
        """One product's provenance (recorded span, synthetic part, illiquid flag)."""
        days = self.config.history_days * DAY
        info: dict[str, Any] = {"product": product, "illiquid": product in self.config.illiquid}
        if product not in self._files:
            start = iso(self.anchor - days)
            label = f"synthetic: seeded random walk from {start}"
            return info | {
                "source": "synthetic",
                "recorded_from": None,
                "recorded_to": None,
                "synthetic_before": None,
                "history_from": start,
                "label": label,
            }
        series = self.recorded(product)
        extended = self.config.extend_history
        label = f"recorded 1m candles shifted by {series.shift_s} s" + (
            f"; candles before {iso(series.first)} are SYNTHETIC" if extended else ""
        )
        return info | {
            "source": "recorded",
            "recorded_from": iso(series.first),
            "recorded_to": iso(series.last),
            "synthetic_before": iso(series.first) if extended else None,
            "history_from": iso(series.first - days if extended else series.first),
            "label": label,
        }
