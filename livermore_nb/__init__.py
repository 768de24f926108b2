"""livermore-nb: warm a trading system's Redis candle cache from Coinbase and inspect it.

The notebooks and the ``livermore-nb`` command are thin layers over this API::

    report = await backfill(BackfillConfig(symbols=("BTC-USD", "ETH-USD")))
    report.ready, report.to_frame()

The analysis side lives in its modules (importing them here would shadow the
module names): ``livermore_nb.coverage.coverage(redis, symbols, timeframes)``
and ``livermore_nb.macdv.macdv(df)`` each return a DataFrame.
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
from .errors import (
    AuthError,
    ConfigError,
    LivermoreError,
    RedisUnavailable,
    StoreError,
    UpstreamError,
)
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
    "raise_for_gate",
]
