"""What a run learns from the API and remembers in Redis: its capabilities, history starts.

Two small hashes per API host, beside the candles (prefix configurable):

* ``{prefix}:api:{host}`` — ``four_hour`` (``1``/``0``) and ``max_buckets``, as
  the API's answers showed them, expiring after ``api_ttl`` seconds so a changed
  API is learnt again;
* ``{prefix}:history:{host}`` — per symbol ``"{start_s} {proof_s}"``: its
  history begins at ``start_s``, proven by an empty page of ``proof_s``-second
  buckets before its oldest candle.

Each is one key, so both work on Redis Cluster too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .store import AsyncRedis, translate_redis_errors
from .timeframes import Timeframe

SAFE_BUCKETS = 300
"""Buckets per request every API regime accepts (the older documented limit)."""
MAX_BUCKETS = 350
"""The documented most buckets per request: tried until the API names a smaller number."""
OPTIONAL_GRANULARITIES = frozenset({"FOUR_HOUR"})
"""Granularities the current reference lists and older regimes reject with a 400."""
DEFAULT_STATE_PREFIX = "livermore-nb"
HISTORY_TTL_S = 90 * 86400
"""A recorded history start is kept this long after it was last proven."""


@dataclass
class Capabilities:
    """What the API serves, as learnt (None = not learnt yet; the planner then assumes yes/350)."""

    four_hour: bool | None = None
    max_buckets: int | None = None

    def serves(self, tf: Timeframe) -> bool:
        """False only when the API said it does not serve ``tf``'s granularity."""
        return tf.granularity not in OPTIONAL_GRANULARITIES or self.four_hour is not False

    def unknown(self, tf: Timeframe, buckets: int) -> bool:
        """True when a request of ``buckets`` at ``tf`` depends on something not learnt yet."""
        optional = tf.granularity in OPTIONAL_GRANULARITIES and self.four_hour is None
        return optional or (buckets > SAFE_BUCKETS and self.max_buckets is None)

    def page_buckets(self, page_size: int | None) -> int:
        """Buckets per page: the most the API accepts (assumed 350), or ``page_size`` if smaller."""
        most = self.max_buckets or MAX_BUCKETS
        return most if page_size is None else min(page_size, most)

    def as_dict(self) -> dict[str, Any]:
        """The report's ``api`` object."""
        return {"four_hour": self.four_hour, "max_buckets": self.max_buckets}


@dataclass(frozen=True)
class HistoryStart:
    """A symbol's history begins at ``start_s``: an empty page of ``proof_s`` buckets showed it."""

    start_s: int
    proof_s: int

    def bounds(self, tf: Timeframe) -> bool:
        """True when the proof holds for ``tf``: an empty page of coarser buckets implies finer.

        A series pages back until a whole page of its own buckets is empty: an
        empty page of finer buckets is a shorter quiet spell, no proof for it.
        """
        return tf.seconds <= self.proof_s


class Memory:
    """The run's memory in Redis: capabilities and history starts of one API host."""

    def __init__(self, client: AsyncRedis, *, prefix: str, api_host: str, api_ttl: int) -> None:
        self.client = client
        self.api_key = f"{prefix}:api:{api_host}"
        self.history_key = f"{prefix}:history:{api_host}"
        self.api_ttl = api_ttl

    async def capabilities(self) -> Capabilities:
        """The capabilities remembered (all unknown once they expired)."""
        with translate_redis_errors("reading the API capabilities", self.client):
            raw = await self.client.hgetall(self.api_key)
        fields = {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
        four_hour, most = fields.get("four_hour"), fields.get("max_buckets")
        return Capabilities(
            four_hour=None if four_hour is None else int(four_hour) == 1,
            max_buckets=None if most is None else int(most),
        )

    async def remember_capabilities(self, caps: Capabilities) -> None:
        """Store what is known, expiring after ``api_ttl`` (nothing known: nothing stored)."""
        fields = [(k, int(v)) for k, v in caps.as_dict().items() if v is not None]  # bool: 0/1
        if not fields or self.api_ttl <= 0:
            return
        with translate_redis_errors("storing the API capabilities", self.client):
            await self.client.hset(self.api_key, items=[x for pair in fields for x in pair])
            await self.client.expire(self.api_key, self.api_ttl)

    async def history(self, symbols: Sequence[str]) -> dict[str, HistoryStart]:
        """The recorded history starts of ``symbols`` (those never proven are absent)."""
        if not symbols:
            return {}
        with translate_redis_errors("reading history starts", self.client):
            values = await self.client.hmget(self.history_key, list(symbols))
        out = {}
        for symbol, value in zip(symbols, values, strict=True):
            if value is not None:
                start, proof = (int(x) for x in value.split())
                out[symbol] = HistoryStart(start, proof)
        return out

    async def remember_history(self, symbol: str, start: HistoryStart) -> None:
        """Record that ``symbol``'s history begins at ``start``."""
        with translate_redis_errors(f"storing the history start of {symbol}", self.client):
            await self.client.hset(self.history_key, symbol, f"{start.start_s} {start.proof_s}")
            await self.client.expire(self.history_key, HISTORY_TTL_S)
