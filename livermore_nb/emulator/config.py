"""Emulator configuration: one frozen keyword-only dataclass, defaults in one place."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import ConfigError

PACKAGED_DATA = Path(__file__).resolve().parent.parent / "data"
"""The recorded 1-minute candles shipped with the package (``livermore_nb/data``)."""

SYNTHETIC_PRICES: Mapping[str, float] = MappingProxyType(
    {
        "SOL-USD": 100.0, "ADA-USD": 0.6, "AVAX-USD": 35.0, "LINK-USD": 15.0,
        "DOT-USD": 7.0, "LTC-USD": 70.0, "BCH-USD": 250.0, "UNI-USD": 6.0,
        "ATOM-USD": 9.0, "XLM-USD": 0.12, "ALGO-USD": 0.18, "FIL-USD": 5.0,
        "AAVE-USD": 100.0, "NEAR-USD": 3.0, "APT-USD": 9.0, "ARB-USD": 1.2,
        "OP-USD": 3.0, "SHIB-USD": 0.00001, "ICP-USD": 10.0, "ETC-USD": 20.0,
        "MATIC-USD": 0.9,
    }
)  # fmt: skip
"""Reference price (the price "now") of each default synthetic product."""

DEFAULT_SYNTHETIC: tuple[str, ...] = tuple(SYNTHETIC_PRICES)
"""21 real-looking synthetic names: with the 4 recorded products, a 25-symbol demo."""

DEFAULT_ILLIQUID: tuple[str, ...] = ("ICP-USD", "XTZ-USD")
"""Products whose *synthetic* candles have gaps (see ``EmulatorConfig.illiquid_gap_rate``).

ICP-USD is the illiquid synthetic product; XTZ-USD (recorded, already gappy) gets
gaps in its synthetic extended history too.
"""


@dataclass(frozen=True, kw_only=True)
class EmulatorConfig:
    """Everything that shapes the emulator's data, limits and faults."""

    data_dir: Path | None = None
    """Folder of ``{PRODUCT}.csv.gz`` recorded 1-minute candles; None = packaged data."""
    synthetic: tuple[str, ...] = DEFAULT_SYNTHETIC
    """Synthetic products listed by ``products()``; ``SYN<digits>-USD`` always works too."""
    illiquid: tuple[str, ...] = DEFAULT_ILLIQUID
    illiquid_gap_rate: float = 0.3
    """How empty an ``illiquid`` product's synthetic candles are.

    An hour is quiet (no candle at any granularity) with this probability, and in
    traded hours each 1m or 5m bucket is empty with it too; a coarser bucket is
    empty only when all its 5m buckets are. At 0.3: ~30 % of the hours and ~51 %
    of the 5m buckets are omitted. Deterministic per bucket.
    """
    daily_volatility: float = 0.03
    """Standard deviation of the synthetic walk's daily log return."""
    history_days: int = 2000
    """Synthetic history reaches this far back from the anchor; nothing before."""
    extend_history: bool = False
    """Serve a recorded product's history before its first recorded midnight from a walk.

    Recorded minutes before that 00:00 UTC are then dropped, so all granularities
    switch from synthetic to recorded at the same instant.
    """
    anchor: float | None = None
    """UNIX time whose minute is the newest recorded minute; None = ``clock()`` at creation."""
    clock: Callable[[], float] = time.time
    """Wall clock (UNIX seconds) for "now", JWT times, rate windows and stats."""
    end_inclusive: bool = False
    """Serve buckets with ``start <= t <= end`` instead of ``start <= t < end``."""
    four_hour: bool = True
    """Serve the ``FOUR_HOUR`` granularity (UTC-aligned 4h aggregates of the same data).

    On by default because Coinbase's current API reference (updated 2026-07) lists
    FOUR_HOUR; off (``--no-four-hour``) is the older regime other clients still
    assume, where FOUR_HOUR is a 400 like any unknown granularity.
    """
    max_buckets: int = 350
    """Most buckets one request may span (``ceil((end - start) / granularity)``).

    350 is today's documented limit; 300 is the older one. More is a 400 with
    Coinbase's "number of candles requested should be less than N" body, and a
    ``limit`` above it is a 400 too.
    """
    rate_limit_private: float = 30
    """Requests per sliding second per API key name on the private endpoint (0 = unlimited)."""
    rate_limit_public: float = 10
    """Requests per sliding second per client IP on the public endpoint (0 = unlimited)."""
    retry_after_s: float = 1
    jwt_leeway_s: float = 5
    jwt_max_lifetime_s: float = 120
    latency_ms: float = 0
    latency_jitter_ms: float = 0
    error_rate: float = 0
    timeout_rate: float = 0
    stall_s: float = 30
    malformed_rate: float = 0
    seed: int = 0
    keys: Mapping[str, Any] = field(default_factory=dict)
    """API key name → public key (EC P-256 or Ed25519) accepted on the private endpoint."""
    shutdown_timeout_s: float = 1.0
    """How long ``stop()`` waits for in-flight requests before cancelling them."""

    def __post_init__(self) -> None:
        """Reject a page size no request could meet."""
        if self.max_buckets < 1:
            raise ConfigError(f"max_buckets must be a positive integer, not {self.max_buckets}")

    def api(self) -> dict[str, Any]:
        """The API regime served: whether FOUR_HOUR exists and the largest page."""
        return {"four_hour": self.four_hour, "max_buckets": self.max_buckets}

    def data_path(self) -> Path:
        """The recorded-data folder in effect."""
        return self.data_dir if self.data_dir is not None else PACKAGED_DATA


DEFAULT_CONFIG = EmulatorConfig()
"""The configuration used when none is given."""


def recorded_files(folder: Path) -> dict[str, Path]:
    """``{PRODUCT}.csv[.gz]`` files in ``folder`` → product → path."""
    return {p.name.split(".")[0]: p for p in sorted(folder.glob("*.csv*"))}
