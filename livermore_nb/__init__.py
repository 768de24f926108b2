"""livermore-nb: warm a trading system's Redis candle cache from Coinbase and inspect it.

The notebooks and the ``livermore-nb`` command are thin layers over this API::

    report = await backfill(BackfillConfig(symbols=("BTC-USD", "ETH-USD")))
    report.ready, report.to_frame()
    coverage(None, ["BTC-USD"], ["5m", "1h"])     # what Redis holds (None: the default Redis)
    macdv(frame)                                  # MACD-V, signal, histogram, stage per bar
"""

from .backfill import (
    BackfillConfig,
    BackfillReport,
    NotReady,
    SeriesResult,
    backfill,
    raise_for_gate,
)
from .candles import Candle
from .coverage import coverage
from .errors import (
    AuthError,
    ConfigError,
    LivermoreError,
    RedisUnavailable,
    StoreError,
    UpstreamError,
)
from .macdv import macdv
from .store import CandleStore
from .timeframes import TIMEFRAMES, Timeframe

__version__ = "0.1.0"

__all__ = [
    "TIMEFRAMES",
    "AuthError",
    "BackfillConfig",
    "BackfillReport",
    "Candle",
    "CandleStore",
    "ConfigError",
    "LivermoreError",
    "NotReady",
    "RedisUnavailable",
    "SeriesResult",
    "StoreError",
    "Timeframe",
    "UpstreamError",
    "__version__",
    "backfill",
    "coverage",
    "macdv",
    "raise_for_gate",
]
