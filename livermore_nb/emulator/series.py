"""The candles behind the emulator: recorded minutes shifted to now, and seeded synthetic walks.

Recorded products are the 1-minute CSVs, shifted by a whole number of minutes so
their newest minute is the minute holding the anchor, then aggregated to each
granularity (``aggregate``) once and cached.

A synthetic product is one seeded 5-minute geometric random walk: FIVE_MINUTE is
the walk itself and every coarser granularity is its aggregate into UTC-aligned
buckets, exactly as Coinbase's granularities all aggregate the same trades, so a
client building 15m/1h/4h/1d from 5m candles gets what the emulator serves.
ONE_MINUTE is a separate, independent minute walk (nothing is derived from it).
A walk is generated block by block, only for the requested window: its level at
block boundaries is a cumulative sum of per-block steps, and inside a block a
Brownian bridge joins the two boundaries, so any window costs O(window) and is
the same whichever way it is asked for. Closed aggregated buckets are cached by
block in a bounded LRU, so asking again for long daily histories is cheap.

``extend_history`` puts such a walk before a recorded product: it ends at the
first 00:00 UTC of the recorded span (recorded minutes before that are dropped),
so every granularity switches from synthetic to recorded at the same instant.
"""

from __future__ import annotations

import functools
import math
import re
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ..candles import read_recorded_csv
from .config import SYNTHETIC_PRICES, EmulatorConfig, recorded_files

SYNTHETIC_PATTERN = re.compile(r"SYN\d+-USD")
"""Any product named like this is a synthetic product (for scale benchmarks)."""
BLOCK = 512
"""Buckets per Brownian-bridge block (≥ 350, so a page touches at most two blocks)."""
CHUNK = 1024
"""Block-level steps drawn per chunk."""
MINUTE, FIVE_MINUTES, HOUR, DAY = 60, 300, 3600, 86400
USD_PER_DAY = 5e6
"""Typical traded value per day; sets synthetic volume."""
CACHED_FROM = 2 * HOUR
"""Granularities at least this coarse are cached: a page aggregates ≥ 7,200 5m bars."""
CACHE_BLOCK = 64
"""Aggregated buckets per cache entry (a 300-bucket page touches at most six entries)."""
CACHE_BYTES = 40 * 2**20
"""Budget of the aggregated-bucket LRU (array bytes plus ``ENTRY_BYTES`` per entry)."""
ENTRY_BYTES = 1024
"""Estimated bookkeeping per cache entry (array headers, tuples, the dict slot)."""


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

    def newest(self, count: int) -> Bars:
        """The last ``count`` bars (``count >= 1``): what ``limit`` keeps."""
        return Bars(*(a[-count:] for a in self))

    def where(self, mask: np.ndarray) -> Bars:
        """The bars where ``mask`` is true (one index array taken from each column: fast)."""
        index = np.flatnonzero(mask)
        return Bars(*(a.take(index) for a in self))


def concat(parts: Iterable[Bars]) -> Bars:
    """Join bar sets that are already in time order."""
    return Bars(*(np.concatenate(cols) for cols in zip(EMPTY, *parts, strict=True)))


EMPTY = Bars(np.empty(0, dtype="int64"), *(np.empty(0) for _ in range(5)))


def aggregate(bars: Bars, seconds: int) -> Bars:
    """Bars → UTC-aligned buckets of ``seconds``: first open, max high, min low, last close.

    Summed volume is rounded to 8 decimals, as Coinbase reports base volume; a
    bucket exists only where at least one bar does.
    """
    bucket = bars.start // seconds * seconds
    heads = np.flatnonzero(np.diff(bucket, prepend=-1))
    if not len(heads):
        return EMPTY
    tails = np.append(heads[1:], len(bucket)) - 1
    return Bars(
        bucket[heads],
        bars.open[heads],
        np.maximum.reduceat(bars.high, heads),
        np.minimum.reduceat(bars.low, heads),
        bars.close[tails],
        np.round(np.add.reduceat(bars.volume, heads), 8),
    )


def bars_from_frame(frame: pd.DataFrame) -> Bars:
    """A candle frame (UTC index ``time``) → Bars."""
    start = pd.DatetimeIndex(frame.index).as_unit("s").asi8
    cols = [frame[c].to_numpy(dtype="float64") for c in ("open", "high", "low", "close", "volume")]
    return Bars(start, *cols)


def unit_hash(key: tuple[int, ...], index: np.ndarray) -> np.ndarray:
    """One uniform number in [0, 1) per integer of ``index``, fixed by ``key`` (splitmix64).

    Stateless, so a draw depends only on its index, however a window is asked for.
    """
    salt = np.random.SeedSequence(key).generate_state(1, np.uint64)[0]
    x = index.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + salt
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / 2.0**53


@functools.lru_cache(maxsize=32)
def load_recorded(path: Path) -> pd.DataFrame:
    """Read one recorded CSV once per process (the frame is shared: never modify it)."""
    return read_recorded_csv(path)


class RecordedSeries:
    """One recorded product, shifted so its newest minute is the anchor's minute.

    With ``from_midnight`` (extended history) only minutes from ``served_from``, the
    first 00:00 UTC of the span, are served: the synthetic walk takes over before.
    """

    def __init__(self, path: Path, anchor: float, *, from_midnight: bool) -> None:
        frame = load_recorded(path)
        last = int(frame.index[-1].timestamp())
        self.shift_s = int(anchor // 60) * 60 - last
        minutes = frame.set_axis(frame.index + pd.Timedelta(seconds=self.shift_s))
        first = int(minutes.index[0].timestamp())
        self.served_from = -(-first // DAY) * DAY if from_midnight else first
        self.minutes = minutes[minutes.index >= pd.Timestamp(self.served_from, unit="s", tz="UTC")]
        self._bars: dict[int, Bars] = {}

    @property
    def first(self) -> int:
        """Start of the oldest served minute, after the shift."""
        return int(self.minutes.index[0].timestamp())

    @property
    def last(self) -> int:
        """Start of the newest recorded minute, after the shift (the anchor's minute)."""
        return int(self.minutes.index[-1].timestamp())

    def bars(self, seconds: int) -> Bars:
        """All buckets of ``seconds`` (UTC-aligned), aggregated once and cached."""
        if seconds not in self._bars:
            self._bars[seconds] = aggregate(bars_from_frame(self.minutes), seconds)
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
    ) -> None:
        self.key, self.seconds, self.first = key, seconds, first
        self.sigma = daily_volatility * math.sqrt(seconds / DAY)
        self.volume = volume
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

    def log_bars(self, lo: float, hi: float, now: float) -> tuple[Bars, np.ndarray]:
        """Buckets with ``lo <= start < hi`` opened by ``now`` (log prices), a uniform draw each.

        The bucket holding ``now`` is the open candle: its close, range and volume
        are those of the walk so far (a fraction ``f`` of the bucket), and equal
        the closed candle's at ``f = 1``. Volumes are final (rounded to 8
        decimals); ``priced`` turns the log prices into served prices. The draws
        decide which buckets an illiquid product leaves empty.
        """
        g = self.seconds
        hi = min(hi, now // g * g + g)
        i_lo = max(0, math.ceil((lo - self.first) / g))
        i_hi = math.ceil((hi - self.first) / g)
        if i_hi <= i_lo:
            return EMPTY, np.empty(0)
        levels, (z_high, z_low, z_vol, z_close, draw) = self._log_levels(i_lo, i_hi)
        start = self.first + g * np.arange(i_lo, i_hi, dtype="int64")
        frac = np.clip((now - start) / g, 0.0, 1.0)
        lo_open = levels[:-1] + self.offset
        lo_close = lo_open + frac * (levels[1:] - levels[:-1])
        lo_close += np.sqrt(frac * (1 - frac)) * self.sigma * z_close
        reach = 0.6 * self.sigma * np.sqrt(frac)
        lo_high = np.maximum(lo_open, lo_close) + reach * np.abs(z_high)
        lo_low = np.minimum(lo_open, lo_close) - reach * np.abs(z_low)
        volume = np.maximum(np.round(self.volume * np.exp(0.5 * z_vol) * frac, 8), 1e-8)
        return Bars(start, lo_open, lo_high, lo_low, lo_close, volume), draw

    def priced(self, bars: Bars) -> Bars:
        """Log prices → served prices: 7 significant digits, at least one tick.

        The map is monotone, so aggregating log bars and then pricing them equals
        aggregating priced bars.
        """
        tick = 10.0**-self.decimals
        open_, high, low, close = (
            np.maximum(np.round(np.exp(x), self.decimals), tick)
            for x in (bars.open, bars.high, bars.low, bars.close)
        )
        return Bars(bars.start, open_, high, low, close, bars.volume)


class BlockCache:
    """A least-recently-used map of aggregated blocks, bounded by their (estimated) bytes.

    An entry is ``(lo, hi, bars)``: the bars of the buckets starting in ``[lo, hi)``.
    """

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes, self.bytes = max_bytes, 0
        self._entries: OrderedDict[Hashable, tuple[int, int, Bars]] = OrderedDict()

    @staticmethod
    def _size(bars: Bars) -> int:
        """Bytes one entry holds."""
        return ENTRY_BYTES + sum(a.nbytes for a in bars)

    def get(self, key: Hashable) -> tuple[int, int, Bars] | None:
        """The entry stored under ``key``, now the most recently used; or None."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: Hashable, lo: int, hi: int, bars: Bars) -> None:
        """Store ``bars`` (the buckets in ``[lo, hi)``), evicting the least recently used."""
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= self._size(old[2])
        self._entries[key] = (lo, hi, bars)
        self.bytes += self._size(bars)
        while self.bytes > self.max_bytes:
            _, (_, _, evicted) = self._entries.popitem(last=False)
            self.bytes -= self._size(evicted)


class SyntheticSeries:
    """One product's synthetic candles: a 5-minute walk and its aggregates, and a minute walk.

    Illiquid products (``gap_rate > 0``) have quiet hours (no bucket of any
    granularity, with probability ``gap_rate``) and, in traded hours, each 1m or
    5m bucket is empty with probability ``gap_rate``; a coarser bucket is empty
    only when all its 5m buckets are. Nothing is served from ``end`` on. Closed
    buckets of ``CACHED_FROM`` and coarser go through the shared LRU, block by block.
    """

    def __init__(
        self,
        *,
        name: str,
        walk: Callable[[int], Walk],
        key: tuple[int, ...],
        gap_rate: float,
        end: float,
        cache: BlockCache,
    ) -> None:
        self.name, self.key, self.gap_rate, self.end = name, key, gap_rate, end
        self._make_walk, self._cache = walk, cache

    @functools.cached_property
    def minute(self) -> Walk:
        """The independent ONE_MINUTE walk (created on first use)."""
        return self._make_walk(MINUTE)

    @functools.cached_property
    def five(self) -> Walk:
        """The 5-minute walk every coarser granularity aggregates (created on first use)."""
        return self._make_walk(FIVE_MINUTES)

    def bars(self, seconds: int, lo: float, hi: float, now: float) -> Bars:
        """Traded buckets of ``seconds`` with ``lo <= start < min(hi, end)`` opened by ``now``."""
        hi = min(hi, self.end)
        walk = self.minute if seconds == MINUTE else self.five
        if seconds < CACHED_FROM:  # cheap enough to aggregate afresh
            return self._aggregate(walk, seconds, lo, hi, now)
        first, stop = -int(-lo // seconds) * seconds, -int(-hi // seconds) * seconds
        open_start = int(now // seconds * seconds)
        closed = self._closed(seconds, first, min(stop, open_start))
        if not first <= open_start < stop:
            return closed
        open_bucket = self._aggregate(walk, seconds, open_start, open_start + seconds, now)
        return concat([closed, open_bucket])

    def _aggregate(self, walk: Walk, seconds: int, lo: float, hi: float, now: float) -> Bars:
        """Buckets of ``seconds`` aggregated from ``walk``'s traded bars in ``[lo, hi)``."""
        return walk.priced(aggregate(self._traded(*walk.log_bars(lo, hi, now)), seconds))

    def _traded(self, bars: Bars, draw: np.ndarray) -> Bars:
        """``bars`` without the empty ones: those drawn empty or in a quiet hour (illiquid only)."""
        if not self.gap_rate or not len(bars.start):
            return bars
        hours = bars.start // HOUR
        quiet = unit_hash(self.key, np.arange(hours[0], hours[-1] + 1)) < self.gap_rate
        return bars.where((draw >= self.gap_rate) & ~quiet[hours - hours[0]])

    def _closed(self, seconds: int, lo: int, hi: int) -> Bars:
        """Closed buckets starting in ``[lo, hi)``, cache block by cache block."""
        if hi <= lo:
            return EMPTY
        span = CACHE_BLOCK * seconds
        blocks = (b * span for b in range(lo // span, -(-hi // span)))
        return concat(self._block(seconds, max(lo, b), min(hi, b + span)) for b in blocks)

    def _block(self, seconds: int, lo: int, hi: int) -> Bars:
        """Closed buckets starting in ``[lo, hi)``, inside one cache block.

        An entry holds one contiguous span; a miss aggregates only what the span
        lacks below and above, so an entry grows as neighbouring pages are asked for.
        """
        key = (self.name, seconds, lo // (CACHE_BLOCK * seconds))
        c_lo, c_hi, bars = self._cache.get(key) or (hi, hi, EMPTY)
        if lo < c_lo or hi > c_hi:
            below = self._aggregate(self.five, seconds, lo, c_lo, c_lo)  # closed: "now" = its end
            above = self._aggregate(self.five, seconds, c_hi, hi, hi)
            c_lo, c_hi, bars = min(lo, c_lo), max(hi, c_hi), concat([below, bars, above])
            self._cache.put(key, c_lo, c_hi, bars)
        return bars.window(lo, hi)


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
        self._synthetic: dict[str, SyntheticSeries] = {}
        self._cache = BlockCache()

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
            self._recorded[product] = RecordedSeries(
                self._files[product], self.anchor, from_midnight=self.config.extend_history
            )
        return self._recorded[product]

    def bars(self, product: str, seconds: int, lo: float, hi: float, now: float) -> Bars:
        """Traded buckets of ``product`` with ``lo <= start < hi`` opened by ``now``."""
        if product not in self._files:
            return self.synthetic(product).bars(seconds, lo, hi, now)
        series = self.recorded(product).bars(seconds)
        recorded = series.window(lo, min(hi, now + 1))
        if not self.config.extend_history or not len(series.start):
            return recorded
        return concat([self.synthetic(product).bars(seconds, lo, hi, now), recorded])

    def synthetic(self, product: str) -> SyntheticSeries:
        """The synthetic series of ``product`` (its extended history, if recorded)."""
        if product not in self._synthetic:
            cfg = self.config
            self._synthetic[product] = SyntheticSeries(
                name=product,
                walk=functools.partial(self._walk, product),
                key=(cfg.seed, product_seed(product)),
                gap_rate=cfg.illiquid_gap_rate if product in cfg.illiquid else 0.0,
                end=self.recorded(product).served_from if product in self._files else math.inf,
                cache=self._cache,
            )
        return self._synthetic[product]

    def _walk(self, product: str, seconds: int) -> Walk:
        """A walk of ``product`` at ``seconds``: ending at now's price, or at the recorded open.

        Extended history ends at ``served_from`` (a midnight), at the open of the
        first recorded minute from then on.
        """
        cfg = self.config
        if product in self._files:
            series = self.recorded(product)
            ref_start, ref_price = series.served_from, float(series.bars(MINUTE).open[0])
            volume = float(np.median(series.bars(seconds).volume))
        else:
            ref_start = int(self.anchor // seconds * seconds)
            ref_price = reference_price(product)
            volume = USD_PER_DAY / ref_price * seconds / DAY
        return Walk(
            key=(cfg.seed, product_seed(product), seconds),
            seconds=seconds,
            first=(ref_start - cfg.history_days * DAY) // seconds * seconds,
            ref_start=ref_start,
            ref_price=ref_price,
            volume=volume,
            daily_volatility=cfg.daily_volatility,
        )

    def describe(self) -> dict[str, Any]:
        """Per product: where its candles come from, and which part of history is synthetic."""
        return {
            "anchor": iso(self.anchor),
            "api": self.config.api(),
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
        boundary = iso(series.served_from)
        label = f"recorded 1m candles shifted by {series.shift_s} s" + (
            f"; candles before {boundary} are SYNTHETIC" if extended else ""
        )
        return info | {
            "source": "recorded",
            "recorded_from": iso(series.first),
            "recorded_to": iso(series.last),
            "synthetic_before": boundary if extended else None,
            "history_from": iso(series.served_from - days if extended else series.first),
            "label": label,
        }
