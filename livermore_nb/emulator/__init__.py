"""A local Coinbase Advanced Trade candles API: the offline demo and the test double.

Serves ``GET /api/v3/brokerage/products/{id}/candles`` (JWT, ES256 or EdDSA) and
``GET /api/v3/brokerage/market/products/{id}/candles`` (public) like Coinbase:

* ``start``/``end`` are UNIX seconds; a bucket starting at ``t`` is returned when
  ``start <= t < end`` (``end_inclusive=True``: ``t <= end``); more than
  ``max_buckets`` (default 350; 300 in the older regime) buckets
  (``ceil((end - start) / granularity)``) is a 400 with Coinbase's body.
* ``limit`` (1..``max_buckets``, else a 400) keeps the newest ``limit`` candles of
  the window. ``FOUR_HOUR`` (UTC-aligned 4h aggregates) is served unless
  ``four_hour=False``, when it is a 400 like any unknown granularity.
  ``describe()``, ``GET /_emulator/products`` and ``GET /_emulator/stats`` name
  the regime under ``api``.
* Candles come newest first, values as strings; buckets without trades are
  omitted; the bucket holding "now" is the open candle, built from data up to now.
* Recorded products (``{PRODUCT}.csv.gz`` in ``data_dir``, default the packaged
  BTC/ETH/DOGE/XTZ) are shifted by whole minutes so their newest minute is the
  minute of ``anchor``, fixed when the Emulator is created: values never change
  while it runs, and no new minutes appear after the anchor.
* Synthetic products (``DEFAULT_SYNTHETIC`` and any ``SYN<digits>-USD``) are
  seeded random walks, deterministic per (seed, product), reaching
  ``history_days`` back: one 5-minute walk whose UTC-aligned aggregates are every
  coarser granularity (so candles agree across granularities, as Coinbase's do),
  and a separate minute walk. ``illiquid`` products (default ICP-USD, and
  XTZ-USD's synthetic history) omit ~30 % of their hours, and more 5m buckets.
* ``extend_history=True`` serves a recorded product's history before its first
  recorded 00:00 UTC from a synthetic walk ending at the recorded open there
  (recorded minutes before that midnight are dropped); ``describe()`` /
  ``GET /_emulator/products`` label them (``synthetic_before``).
* Rate limits: a sliding second per key name (private) or client IP (public);
  429 with ``Retry-After: <retry_after_s as %g>``. Rejected requests count
  toward the window, so hammering keeps a client locked out.
* Faults (after auth and rate limiting, seeded): latency, 5xx, stalls, malformed
  200 bodies. Statistics: ``emulator.stats`` or ``GET /_emulator/stats``,
  ``POST /_emulator/reset``.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_getattr
from .config import DEFAULT_ILLIQUID, DEFAULT_SYNTHETIC, EmulatorConfig
from .keys import TestKey, load_public_keys, make_test_key, public_key_from_secret, write_key_file

if TYPE_CHECKING:
    from .server import Emulator, EmulatorThread, serve
    from .traffic import EmulatorStats

_MODULE_OF = {"Emulator": "server", "EmulatorThread": "server", "serve": "server"}
_MODULE_OF["EmulatorStats"] = "traffic"


__getattr__ = lazy_getattr(__name__, _MODULE_OF, globals())
"""The server's names load on first use: the CLI reads the emulator's defaults
(``config``) for every command's help, and the server pulls in numpy and pandas,
which a backfill never needs."""


__all__ = [
    "DEFAULT_ILLIQUID",
    "DEFAULT_SYNTHETIC",
    "Emulator",
    "EmulatorConfig",
    "EmulatorStats",
    "EmulatorThread",
    "TestKey",
    "load_public_keys",
    "make_test_key",
    "public_key_from_secret",
    "serve",
    "write_key_file",
]
