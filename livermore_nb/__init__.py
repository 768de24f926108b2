"""livermore-nb: warm a trading system's Redis candle cache from Coinbase and inspect it.

The notebooks and the ``livermore-nb`` command are thin layers over this API::

    report = await backfill(BackfillConfig(symbols=("BTC-USD", "ETH-USD")))
    report.ready, report.to_frame()

The analysis side lives in its modules (importing them here would shadow the
module names): ``livermore_nb.coverage.coverage(redis, symbols, timeframes)``
and ``livermore_nb.macdv.macdv(df)`` each return a DataFrame.

The names below are imported on first use (PEP 562), so ``import livermore_nb.cli``
costs milliseconds, not the two seconds pandas and aiohttp take: the command can
then catch a Ctrl-C that arrives while they load.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .lazy import lazy_getattr

if TYPE_CHECKING:
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

_HOMES = {
    "backfill": ("BackfillConfig", "BackfillReport", "NotReady", "SeriesResult", "backfill",
                 "raise_for_gate"),
    "candles": ("Candle",),
    "errors": ("AuthError", "ConfigError", "LivermoreError", "RedisUnavailable", "StoreError",
               "UpstreamError"),
    "store": ("CandleStore",),
    "timeframes": ("TIMEFRAMES", "Timeframe"),
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}


class _Package(ModuleType):
    """The package module; its ``backfill`` stays the function when the submodule loads."""

    def __setattr__(self, name: str, value: Any) -> None:
        """Bind ``backfill`` to the function, as the eager ``from .backfill import`` did."""
        if name == "backfill" and isinstance(value, ModuleType):
            value = value.backfill
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__getattr__ = lazy_getattr(__name__, _MODULE_OF, globals())


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
