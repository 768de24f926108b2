"""Startup backfill: plan the series, fetch them paced, write each as it lands, gate on it.

``await backfill(BackfillConfig(symbols=("BTC-USD",)))`` returns a
:class:`BackfillReport`; ``report.ready`` is the readiness gate and
``report.exit_code`` what the CLI exits with.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import re
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

import aiohttp
import orjson

from .budget import SHARED_RATE_MODES, SharedPacer, budget_key, outbound_address, shares_rate
from .candles import Candle, aggregate, candle_time, complete_buckets
from .coinbase import DEFAULT_API_URL, CoinbaseClient, Credentials, load_credentials
from .errors import (
    EXIT_NOT_READY,
    EXIT_OK,
    EXIT_REDIS,
    AuthError,
    ConfigError,
    LivermoreError,
    ProductNotFound,
    StoreError,
    UpstreamError,
)
from .leases import LEASE_S, Lease, SeriesLeases
from .macdv import find_gaps
from .products import hints, list_products, syntax_guess
from .ratelimit import Pacer, Pacing, RequestStats, RetryPolicy
from .store import (
    DEFAULT_KEY_TEMPLATE,
    MAX_KEEP,
    MAX_TTL_S,
    REDIS_TIMEOUT_S,
    CandleStore,
    SeriesInfo,
    check_key_template,
    connect,
)
from .timeframes import (
    DEFAULT_TIMEFRAMES,
    ISO_UTC,
    STALE_PERIODS,
    Timeframe,
    get_timeframe,
    is_stale,
    parse_timeframes,
)

PRIVATE_RATE = 25.0
PUBLIC_RATE = 8.0
SYMBOL_RE = re.compile(r"^(?=.{3,40}$)[A-Z0-9]+(?:-[A-Z0-9]+){1,3}$")
"""Coinbase product ids: ``BTC-USD``, ``1INCH-USD``, and dated or perpetual ``BIT-28JUN24-CDE``."""

DEFAULT_DEADLINE_S = 300.0
"""A startup backfill that has not finished in 5 minutes is stuck (rate-limited key, sick API)."""
GC_YOUNG_THRESHOLD = 50_000
"""Allocations between young-generation collections while a backfill runs (CPython: 700)."""
EventSink = Callable[[dict[str, Any]], None]


def parse_symbols(symbols: str | Sequence[str]) -> tuple[str, ...]:
    """Normalise ``"btc-usd,ETH-USD"`` or a list to unique upper-case product ids."""
    items = symbols.replace("\n", ",").split(",") if isinstance(symbols, str) else list(symbols)
    cleaned = [s.strip().upper() for s in items if s and s.strip()]
    if not cleaned:
        raise ConfigError("no symbols given")
    for symbol in cleaned:
        if not SYMBOL_RE.match(symbol):
            guess = syntax_guess(symbol)
            hint = f"did you mean {guess}?" if guess and SYMBOL_RE.match(guess) else "like BTC-USD"
            raise ConfigError(f"malformed symbol {symbol!r} (expected a product id; {hint})")
    return tuple(dict.fromkeys(cleaned))


@dataclass(frozen=True, kw_only=True)
class BackfillConfig:
    """Everything a backfill needs except secrets (those come from the environment)."""

    symbols: tuple[str, ...]
    timeframes: tuple[str, ...] = DEFAULT_TIMEFRAMES
    candles: int = 300
    """Closed candles wanted per series."""
    min_candles: int = 150
    """The readiness gate: a series with fewer candles in Redis is ``short``."""
    rate: float | None = None
    """Requests per second; None = 25 with a key (private endpoint), 8 without."""
    concurrency: int = 16
    redis_url: str | None = None
    api_url: str | None = None
    key_template: str = DEFAULT_KEY_TEMPLATE
    user_id: int = 1
    exchange_id: int = 1
    keep: int = 1000
    ttl: int = 86400
    include_open: bool = False
    full: bool = False
    """Refetch every series even when Redis already holds it."""
    page_size: int = 300
    max_pages: int = 20
    """Bound on pages per series when paging back through an illiquid product's gaps."""
    timeout_s: float = 10.0
    redis_timeout_s: float = REDIS_TIMEOUT_S
    """Longest wait for one Redis reply; a Redis that hangs longer stops the run (exit 4)."""
    deadline_s: float = DEFAULT_DEADLINE_S
    """Time budget of the whole run (s, 0 = none): at the deadline it stops with exit 3."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """Tries per request, backoff and the 429 cool-down."""
    shared_rate: str = "auto"
    """``on``: one rate budget, 429 cool-down and series leases per API key, kept in Redis;
    ``off``: this process alone; ``auto``: on whenever a Redis URL is configured."""
    lease_s: float = LEASE_S
    """Series lease: how long a dead replica's series wait before another process takes them."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "symbols", parse_symbols(self.symbols))
        set_(self, "timeframes", tuple(tf.name for tf in parse_timeframes(self.timeframes)))
        checks = [
            (self.candles >= 1, f"--candles must be at least 1, got {self.candles}"),
            (self.min_candles >= 0, f"--min-candles must be ≥ 0, got {self.min_candles}"),
            (
                self.min_candles <= self.candles,
                f"--min-candles ({self.min_candles}) cannot exceed --candles ({self.candles})",
            ),
            (self.rate is None or self.rate > 0, f"--rate must be > 0, got {self.rate}"),
            (self.concurrency >= 1, f"--concurrency must be ≥ 1, got {self.concurrency}"),
            (1 <= self.page_size <= 350, f"page size must be 1..350, got {self.page_size}"),
            (self.keep == 0 or self.keep >= self.candles, "--keep must be 0 or ≥ --candles"),
            (self.keep <= MAX_KEEP, f"--keep must be ≤ {MAX_KEEP}, got {self.keep}"),
            (0 <= self.ttl <= MAX_TTL_S, f"--ttl must be 0..{MAX_TTL_S} s, got {self.ttl}"),
            (
                0 < self.redis_timeout_s < math.inf,
                f"Redis timeout must be > 0 s, got {self.redis_timeout_s}",
            ),
            (
                0 <= self.deadline_s < math.inf,
                f"--deadline must be ≥ 0 s (0 = none), got {self.deadline_s}",
            ),
            (self.max_pages >= 1, "max pages must be ≥ 1"),
            (self.timeout_s > 0, "timeout must be > 0"),
            (
                self.shared_rate in SHARED_RATE_MODES,
                f"--shared-rate must be one of {', '.join(SHARED_RATE_MODES)}",
            ),
            (self.lease_s > 0, f"--lease must be > 0 seconds, got {self.lease_s}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        check_key_template(self.key_template)


def open_store(config: BackfillConfig) -> CandleStore:
    """A CandleStore on a new Redis client, keyed, trimmed and expiring as ``config`` says.

    The caller closes ``store.client`` (``await store.client.aclose()``).
    """
    return CandleStore(
        connect(config.redis_url, timeout_s=config.redis_timeout_s),
        key_template=config.key_template,
        user_id=config.user_id,
        exchange_id=config.exchange_id,
        keep=config.keep,
        ttl=config.ttl,
    )


@dataclass(frozen=True)
class Task:
    """One API series to fetch (``source``) and the series written from it."""

    symbol: str
    source: Timeframe
    targets: tuple[Timeframe, ...]


def plan(symbols: Sequence[str], timeframes: Sequence[str]) -> list[Task]:
    """Group timeframes by API source (4h rides on 1h); shortest first, symbols interleaved."""
    by_source: dict[str, list[Timeframe]] = {}
    for name in timeframes:
        tf = get_timeframe(name)
        by_source.setdefault(tf.source, []).append(tf)
    sources = sorted(by_source, key=lambda s: get_timeframe(s).seconds)
    return [
        Task(symbol, get_timeframe(source), tuple(by_source[source]))
        for source in sources
        for symbol in symbols
    ]


@dataclass(frozen=True)
class Window:
    """Which candles of one target series to fetch: ``[start_s, end_s)``; ``full`` = cold."""

    start_s: int
    end_s: int
    full: bool


def target_window(
    tf: Timeframe, info: SeriesInfo, now: float, config: BackfillConfig
) -> Window | None:
    """The window still missing for a series, or None when no new candle can exist yet."""
    closed_end = tf.floor(now)
    end = closed_end + tf.seconds if config.include_open else closed_end
    cold_start = end - config.candles * tf.seconds
    warm = not config.full and info.last_ms is not None and info.count >= config.candles
    if not warm or info.last_ms is None:
        return Window(cold_start, end, True)
    last_s = info.last_ms // 1000
    if config.include_open:
        return Window(max(last_s, cold_start), end, last_s < cold_start)
    if last_s + tf.seconds >= closed_end:
        return None
    return Window(max(last_s + tf.seconds, cold_start), end, last_s + tf.seconds < cold_start)


WindowOf = Callable[[str, Timeframe], "Window | None"]
DERIVE_FROM_S = 300
"""The finest source warm series are built from: 5m (a page is 25 h; a 1m page only 5 h)."""


def _source_seconds(task: Task) -> int:
    """Sort key: the task's API granularity in seconds."""
    return task.source.seconds


def derive_warm(tasks: list[Task], window_of: WindowOf, page_size: int) -> list[Task]:
    """Build warm series from one page of their symbol's finest source where it covers them.

    After a short downtime every series of a symbol misses only its newest
    candles, and one page of 5m (25 hours) holds all they need: 15m, 1h, 4h and
    1d are then aggregated from it, as Coinbase's own granularities aggregate
    the same trades. A restart costs one request per symbol instead of one per
    series. Cold series, and any the page cannot cover, keep their own fetch;
    so does 1m, and nothing is built from it (``DERIVE_FROM_S``).
    """
    by_symbol: dict[str, list[Task]] = {}
    for task in tasks:
        by_symbol.setdefault(task.symbol, []).append(task)
    moved: dict[Task, Task] = {}
    for own in by_symbol.values():
        bases = sorted((t for t in own if t.source.seconds >= DERIVE_FROM_S), key=_source_seconds)
        if not bases:
            continue
        base, others = bases[0], [t for t in own if t is not bases[0]]
        span = [w for tf in base.targets if (w := window_of(base.symbol, tf)) is not None]
        taken: list[Timeframe] = []
        candidates = sorted((tf for t in others for tf in t.targets), key=attrgetter("seconds"))
        for tf in candidates:
            window = window_of(base.symbol, tf)
            if window is None or window.full or tf.seconds % base.source.seconds:
                continue
            start = min(w.start_s for w in [*span, window])
            end = max(w.end_s for w in [*span, window])
            if end - start > page_size * base.source.seconds:
                continue  # beyond one page: it keeps its own fetch
            span.append(window)
            taken.append(tf)
        if taken:
            moved[base] = replace(base, targets=(*base.targets, *taken))
            for task in others:
                kept = tuple(tf for tf in task.targets if tf not in taken)
                moved[task] = replace(task, targets=kept)
    out = [moved.get(task, task) for task in tasks]
    return [task for task in out if task.targets]


def fold_warm(
    tasks: list[Task],
    infos: Mapping[tuple[str, str], SeriesInfo],
    now: float,
    config: BackfillConfig,
) -> list[Task]:
    """The tasks a run at ``now`` sends, given what Redis holds: ``derive_warm`` on the windows."""
    if config.include_open:  # an open candle cannot be aggregated from closed ones
        return tasks

    def window_of(symbol: str, tf: Timeframe) -> Window | None:
        return target_window(tf, infos[(symbol, tf.name)], now, config)

    return derive_warm(tasks, window_of, config.page_size)


def _count_in_window(
    tf: Timeframe, source: Timeframe, window: Window, found: Sequence[Candle], covered_s: int
) -> int:
    """How many ``tf`` candles ``found`` (of ``source``) yields in ``window``.

    Counts bucket starts instead of building the candles: the check runs after
    every page, the aggregation once at the end.
    """
    end_ms = window.end_s * 1000
    if tf == source:
        return bisect_left(found, end_ms, key=candle_time)
    buckets = complete_buckets(tf, covered_s * 1000, end_ms)
    lo = bisect_left(found, buckets.start, key=candle_time)
    hi = bisect_left(found, buckets.stop, key=candle_time, lo=lo)
    return len(set(map(tf.ms.__rfloordiv__, map(candle_time, found[lo:hi]))))


@dataclass
class SeriesResult:
    """How one series ended: candles now in Redis, first/last open time, status."""

    symbol: str
    """Product id, e.g. ``BTC-USD``."""
    timeframe: str
    """Timeframe name, e.g. ``5m`` or ``4h``."""
    candles: int = 0
    """Candles the series holds in Redis after the run (count)."""
    first: str | None = None
    """Open time of its oldest candle in Redis, ISO-8601 UTC (``2024-04-04T00:00:00Z``)."""
    last: str | None = None
    """Open time of its newest candle in Redis, ISO-8601 UTC; null for both when empty."""
    status: str = "failed"
    """``ready`` (≥ ``min_candles``), ``short`` (fewer) or ``failed`` (see ``error``)."""
    error: str | None = None
    """Why the series is short or failed ("did you mean" for unknown products); null if ready."""
    fetched: int = 0
    """Candles this run wrote to the series (count; 0 when it was already current)."""
    source: str | None = None
    """``fetched`` by this process, taken from a ``peer`` that fetched it, or ``cached``."""


SERIES_FIELDS = ("symbol", "timeframe", "candles", "first", "last", "status", "error", "source")


@dataclass
class BackfillReport:
    """The outcome of a backfill: the readiness gate, counters, and one row per series."""

    ready: bool
    """The readiness gate: every series ``ready`` and the run not stopped early."""
    duration_s: float
    """Wall time of the run (seconds)."""
    requests: int
    """HTTP requests sent, retries and a products list included (count)."""
    retries: int
    """Requests that were retries after a 429, 5xx, timeout or malformed body (count)."""
    rate_limited: int
    """Answers that were HTTP 429 (count)."""
    series: list[SeriesResult]
    """One entry per (symbol, timeframe), in plan order."""
    error: str | None = None
    """Why the run stopped early (authentication, Redis, interruption), if it did."""
    fatal_exit_code: int | None = None

    @property
    def from_peer(self) -> int:
        """Series this process took from a peer that fetched them (single-flight)."""
        return sum(s.source == "peer" for s in self.series)

    @property
    def exit_code(self) -> int:
        """0 ready, 3 some series short/failed, or the code of the error that stopped the run."""
        if self.fatal_exit_code is not None:
            return self.fatal_exit_code
        return EXIT_OK if self.ready else EXIT_NOT_READY

    def to_dict(self) -> dict[str, Any]:
        """The report JSON of DESIGN.md (plus ``error`` when the run stopped early)."""
        return {
            "ready": self.ready,
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "retries": self.retries,
            "rate_limited": self.rate_limited,
            "from_peer": self.from_peer,
            "error": self.error,
            "series": [{k: getattr(s, k) for k in SERIES_FIELDS} for s in self.series],
        }

    def verdict(self) -> str:
        """One line for people: READY or NOT READY, series per status, time and requests."""
        counts = Counter(s.status for s in self.series)
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        return (
            f"{'READY' if self.ready else 'NOT READY'}: {summary} in {self.duration_s:.1f}s, "
            f"{self.requests} requests, {self.retries} retries, {self.rate_limited} rate-limited"
            + (f", {self.from_peer} series from peers" if self.from_peer else "")
        )

    def to_frame(self) -> Any:
        """The per-series table as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.to_dict()["series"])


class NotReady(LivermoreError):
    """The readiness gate failed: some series are short or failed."""


def raise_for_gate(report: BackfillReport) -> None:
    """Raise NotReady naming the series that failed the gate (for notebooks and scripts)."""
    if report.ready:
        return
    bad = [f"{s.symbol} {s.timeframe} ({s.status}: {s.error or s.candles})" for s in report.series]
    bad = [b for b, s in zip(bad, report.series, strict=True) if s.status != "ready"]
    reason = report.error or f"{len(bad)} series not ready"
    raise NotReady(f"{reason}: " + "; ".join(bad[:20]) + (" …" if len(bad) > 20 else ""))


def _iso(ms: int | None) -> str | None:
    """Milliseconds since epoch as an ISO-8601 UTC string."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime(ISO_UTC)


NOT_STARTED = "not started"


def _failed(symbol: str, timeframe: str, info: SeriesInfo, error: str) -> SeriesResult:
    """A failed series, with what Redis already held for it (untouched by this run)."""
    return SeriesResult(
        symbol, timeframe, info.count, _iso(info.first_ms), _iso(info.last_ms), "failed", error
    )


def resolve_rate(config: BackfillConfig, credentials: Credentials | None) -> float:
    """The configured rate, or the default for the endpoint in use."""
    return config.rate or (PRIVATE_RATE if credentials else PUBLIC_RATE)


async def shared_pacing(
    config: BackfillConfig, store: CandleStore, api_url: str, credentials: Credentials | None
) -> tuple[Pacing, SeriesLeases | None]:
    """The pacer and series leases of a run: shared through Redis, or this process's own.

    The budget belongs to the API key (a hash of its name, never its secret) or,
    on the public endpoint, to this host's outbound address.
    """
    rate = resolve_rate(config, credentials)
    if not shares_rate(config.shared_rate, config.redis_url):
        return Pacer(rate), None
    identity = credentials.key_name if credentials else await outbound_address(api_url)
    pacer = SharedPacer(store.client, budget_key(api_url, identity), rate)
    scope = f"{api_url}\n{config.candles}\n{config.include_open}\n{config.full}"
    return pacer, SeriesLeases(store.client, scope=scope, lease_s=config.lease_s)


class _Run:
    """One backfill run: shared client, store, results and progress."""

    def __init__(
        self,
        config: BackfillConfig,
        client: CoinbaseClient,
        store: CandleStore,
        infos: dict[tuple[str, str], SeriesInfo],
        emit: EventSink,
        clock: Callable[[], float],
        leases: SeriesLeases | None = None,
    ) -> None:
        self.config = config
        self.leases = leases
        self.client = client
        self.store = store
        self.infos = infos
        self.emit = emit
        self.clock = clock
        self.results: dict[tuple[str, str], SeriesResult] = {
            key: _failed(*key, info, NOT_STARTED) for key, info in infos.items()
        }
        self.unknown: set[str] = set()
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()

    async def run_task(self, task: Task) -> None:
        """Fetch, derive and write the series of one task; record each outcome."""
        try:
            if task.symbol in self.unknown:
                raise ProductNotFound(404, f"Product {task.symbol} not supported")
            await self._single_flight(task)
        except (AuthError, StoreError):
            raise
        except UpstreamError as exc:
            if isinstance(exc, ProductNotFound):
                self.unknown.add(task.symbol)
            for tf in task.targets:
                self._record_failure(task.symbol, tf, str(exc))
            self.failed += len(task.targets)
        self.done += len(task.targets)
        self._progress()

    async def _single_flight(self, task: Task) -> None:
        """Fetch a task under its lease, or take what the peer holding it wrote."""
        if self.leases is None:
            await self._fetch_and_write(task)
            return
        name = self.leases.name(
            self.store.key(task.symbol, task.source), *(tf.name for tf in task.targets)
        )
        got = await self.leases.acquire(name)
        while not isinstance(got, Lease):
            if await self._take_from_peer(task, got):
                return
            got = await self.leases.acquire(name, unless=got)
        async with got:
            at = self.clock()
            await self._fetch_and_write(task)
            got.finish(self._done_marker(task, at))

    def _done_marker(self, task: Task, at: float) -> bytes:
        """What a holder leaves its peers: when it looked, and each target's count and last."""
        series = {}
        for tf in task.targets:
            result = self.results[(task.symbol, tf.name)]
            series[tf.name] = [result.candles, result.last]
        return orjson.dumps({"at": at, "series": series})

    async def _take_from_peer(self, task: Task, marker: bytes) -> bool:
        """Record a peer's series from Redis, unless a candle closed since or Redis lost them."""
        doc = orjson.loads(marker)
        now = self.clock()
        if any(tf.floor(doc["at"]) != tf.floor(now) for tf in task.targets):
            return False
        infos = await self.store.info([(task.symbol, tf) for tf in task.targets])
        for tf, info in zip(task.targets, infos, strict=True):
            count, last = doc["series"].get(tf.name, [None, None])
            if count is None or info.count < count or (last and (_iso(info.last_ms) or "") < last):
                return False
        for tf, info in zip(task.targets, infos, strict=True):
            self._record(task.symbol, tf, info, fetched=0, source="peer")
        return True

    async def _fetch_and_write(self, task: Task) -> None:
        now = self.clock()
        windows = {
            tf: target_window(tf, self.infos[(task.symbol, tf.name)], now, self.config)
            for tf in task.targets
        }
        todo = {tf: w for tf, w in windows.items() if w is not None}
        for tf in task.targets:
            if tf not in todo:
                info = self.infos[(task.symbol, tf.name)]
                self._record(task.symbol, tf, info, fetched=0, source="cached")
        if not todo:
            return
        start = min(w.start_s for w in todo.values())
        end = min(max(w.end_s for w in todo.values()), task.source.floor(now) + task.source.seconds)
        cold = [(tf, w) for tf, w in todo.items() if w.full]

        def more_needed(found: Sequence[Candle], covered_s: int) -> bool:
            return any(
                _count_in_window(tf, task.source, w, found, covered_s) < self.config.candles
                for tf, w in cold
            )

        found, covered_s = await self.client.fetch(
            task.symbol,
            task.source,
            start,
            end,
            more_needed=more_needed if cold else None,
            max_pages=self.config.max_pages,
        )
        for tf, window in todo.items():
            series = self._series_for(tf, task.source, window, found, covered_s * 1000)
            info = await self.store.write(task.symbol, tf, series, replace=window.full)
            self._record(task.symbol, tf, info, fetched=len(series), source="fetched")

    def _series_for(
        self,
        tf: Timeframe,
        source: Timeframe,
        window: Window,
        found: Sequence[Candle],
        covered_ms: int,
    ) -> list[Candle]:
        """The newest candles of one target in its window, aggregated unless it is the source."""
        end_ms = window.end_s * 1000
        series: Sequence[Candle]
        if tf == source:
            series = found[: bisect_left(found, end_ms, key=candle_time)]
        else:
            series = aggregate(found, tf, covered_ms, end_ms)
        if not window.full:
            series = series[bisect_left(series, window.start_s * 1000, key=candle_time) :]
        return list(series[-self.config.candles :])

    def _record(
        self, symbol: str, tf: Timeframe, info: SeriesInfo, fetched: int, source: str | None
    ) -> None:
        ready = info.count >= self.config.min_candles
        self.results[(symbol, tf.name)] = SeriesResult(
            symbol,
            tf.name,
            candles=info.count,
            first=_iso(info.first_ms),
            last=_iso(info.last_ms),
            status="ready" if ready else "short",
            error=None if ready else f"{info.count} < {self.config.min_candles} candles",
            fetched=fetched,
            source=source,
        )

    def _record_failure(self, symbol: str, tf: Timeframe, error: str) -> None:
        self.results[(symbol, tf.name)] = _failed(
            symbol, tf.name, self.infos[(symbol, tf.name)], error
        )

    async def regate(self, now: float) -> None:
        """Judge every series again on what Redis holds now, not on what the writes returned.

        A Redis restarted without persistence, a concurrent writer or an eviction
        may have changed a series since it was written: one pipelined read gives
        the counts the gate judges. A ready series whose newest candle is older
        than the product's normal gaps allow (:func:`is_stale`) becomes short (stale);
        only those few candidates are read whole, to measure their gaps.
        """
        keys = list(self.results)
        series = [(symbol, get_timeframe(tf)) for symbol, tf in keys]
        too_old = []
        for (symbol, tf), info in zip(series, await self.store.info(series), strict=True):
            result = self.results[(symbol, tf.name)]
            if result.status == "failed":
                self.infos[(symbol, tf.name)] = info
                self._record_failure(symbol, tf, result.error or NOT_STARTED)
                continue
            self._record(symbol, tf, info, fetched=result.fetched, source=result.source)
            ready = info.count >= self.config.min_candles and info.last_ms is not None
            if ready and is_stale(now - (info.last_ms or 0) / 1000 - tf.seconds, tf.seconds):
                too_old.append((symbol, tf))
        frames = await asyncio.gather(*(self.store.read(s, tf) for s, tf in too_old))
        for (symbol, tf), frame in zip(too_old, frames, strict=True):
            if len(frame):  # (else a concurrent writer emptied it: short already says so)
                gaps = find_gaps(frame, tf.seconds)["missing"]
                gap = int(gaps.max()) if len(gaps) else 0
                self._check_stale(symbol, tf, frame.index[-1].value // 1_000_000, now, gap)

    def _check_stale(
        self, symbol: str, tf: Timeframe, last_ms: int, now: float, largest_gap: int
    ) -> None:
        """Mark a ready series short when its newest candle is too old (see is_stale).

        The report keeps DESIGN's three statuses (ready, short, failed): a stale
        series is short of its newest candles, and its error says ``stale: …``.
        """
        age_s = now - (last_ms / 1000 + tf.seconds)
        if is_stale(age_s, tf.seconds, largest_gap=largest_gap):
            result = self.results[(symbol, tf.name)]
            result.status = "short"
            result.error = (
                f"stale: the newest candle ({_iso(last_ms)}) closed {age_s / 60:.0f} min ago, "
                f"{age_s / tf.seconds:.1f} periods (allowed: {STALE_PERIODS:g}, or twice the "
                f"series' largest gap, {largest_gap})"
            )

    def _progress(self) -> None:
        total = len(self.results)
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * (total - self.done) if self.done else None
        self.emit(
            {
                "event": "backfill_progress",
                "done": self.done,
                "total": total,
                "percent": round(100 * self.done / total, 1) if total else 100.0,
                "eta_s": None if eta is None else round(eta, 1),
                "errors": self.failed,
                "requests": self.client.stats.requests,
            }
        )


async def _work(run: _Run, queue: asyncio.Queue[Task]) -> None:
    """A worker: take tasks in priority order until none are left."""
    while True:
        try:
            task = queue.get_nowait()
        except asyncio.QueueEmpty:
            return
        await run.run_task(task)


_runs_in_progress = 0
_saved_gc_thresholds: tuple[int, int, int] = gc.get_threshold()


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Collect the young generation less often while candles stream through.

    A series' candles live for one fetch: with CPython's default threshold they
    survive into the old generations and are traversed again and again (about
    13 % of the instructions of a large backfill). Reference counting still
    frees them and cycles are still collected, only less often. The first run
    to enter raises the threshold and the last to leave restores it.
    """
    global _runs_in_progress, _saved_gc_thresholds
    if _runs_in_progress == 0:
        _saved_gc_thresholds = gc.get_threshold()
        young, *older = _saved_gc_thresholds
        gc.set_threshold(max(young, GC_YOUNG_THRESHOLD), *older)
    _runs_in_progress += 1
    try:
        yield
    finally:
        _runs_in_progress -= 1
        if _runs_in_progress == 0:
            gc.set_threshold(*_saved_gc_thresholds)


async def backfill(
    config: BackfillConfig,
    *,
    env: Mapping[str, str] | None = None,
    on_event: EventSink | None = None,
    stop: asyncio.Event | None = None,
    clock: Callable[[], float] = time.time,
) -> BackfillReport:
    """Fill Redis for every series of ``config`` and report which are ready.

    Raises ConfigError (bad options or key) and RedisUnavailable (Redis down at
    start) before any request is sent; failures later on are in the report.
    Setting ``stop`` interrupts the run: written series stay, the rest are failed.
    ``clock`` is "now" for deciding which candles are closed (JWTs use real time).
    """
    env = os.environ if env is None else env
    emit = on_event or (lambda event: None)
    credentials = load_credentials(env)
    api_url = config.api_url or env.get("COINBASE_API_URL") or DEFAULT_API_URL
    rate = resolve_rate(config, credentials)
    store = open_store(config)
    started = time.monotonic()
    stats = RequestStats()
    try:
        await store.ping()
        pacer, leases = await shared_pacing(config, store, api_url, credentials)
        tasks = plan(config.symbols, config.timeframes)
        keys = [(t.symbol, tf) for t in tasks for tf in t.targets]
        infos = dict(zip([(s, tf.name) for s, tf in keys], await store.info(keys), strict=True))
        tasks = fold_warm(tasks, infos, clock(), config)
        emit(
            {
                "event": "backfill_start",
                "symbols": len(config.symbols),
                "series": len(keys),
                "requests_planned": len(tasks),
                "rate": rate,
                "endpoint": "private" if credentials else "public",
                "shared_rate": leases is not None,
            }
        )
        timeout = aiohttp.ClientTimeout(total=config.timeout_s)
        connector = aiohttp.TCPConnector(limit=config.concurrency * 4)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            client = CoinbaseClient(
                session,
                api_url=api_url,
                credentials=credentials,
                pacer=pacer,
                retry=config.retry,
                stats=stats,
                page_size=config.page_size,
            )
            run = _Run(config, client, store, infos, emit, clock, leases)
            deadline = (
                config.deadline_s - (time.monotonic() - started) if config.deadline_s else None
            )
            with _fewer_collections():
                error, code = await _run_workers(run, tasks, config.concurrency, stop, deadline)
            if run.unknown and error is None:
                await _explain_unknown(run)
        if code != EXIT_REDIS:
            try:
                await run.regate(clock())
            except StoreError as exc:
                error, code = str(exc), exc.exit_code
    finally:
        await store.client.aclose()
    results = list(run.results.values())
    report = BackfillReport(
        ready=error is None and all(r.status == "ready" for r in results),
        duration_s=time.monotonic() - started,
        requests=stats.requests,
        retries=stats.retries,
        rate_limited=stats.rate_limited,
        series=results,
        error=error,
        fatal_exit_code=code,
    )
    emit(
        {
            "event": "backfill_complete",
            "ready": report.ready,
            "duration_s": round(report.duration_s, 3),
            "requests": report.requests,
            "retries": report.retries,
            "rate_limited": report.rate_limited,
            "from_peer": report.from_peer,
            "ready_series": sum(r.status == "ready" for r in results),
            "short_series": sum(r.status == "short" for r in results),
            "stale_series": sum((r.error or "").startswith("stale:") for r in results),
            "failed_series": sum(r.status == "failed" for r in results),
            "error": error,
        }
    )
    return report


async def _explain_unknown(run: _Run) -> None:
    """Add "did you mean" to the errors of products the API 404'd: one products request.

    Asked only after a 404, so a run whose symbols all exist sends no extra
    request; the request is paced and counted like any other. If it fails, the
    404s stand as they are.
    """
    try:
        listed = await list_products(run.client)
    except UpstreamError:
        return
    texts = hints(run.unknown, listed)
    for key, result in run.results.items():
        if result.symbol in texts:
            run.results[key] = replace(result, error=f"{result.error}; {texts[result.symbol]}")


async def _run_workers(
    run: _Run,
    tasks: list[Task],
    concurrency: int,
    stop: asyncio.Event | None,
    deadline_s: float | None = None,
) -> tuple[str | None, int | None]:
    """Run the tasks on ``concurrency`` workers; (error, exit code) if the run stopped early.

    ``deadline_s``: seconds left of the run's time budget (``--deadline``); when they
    run out the run stops like an interruption, with the deadline as its reason.
    """
    queue: asyncio.Queue[Task] = asyncio.Queue()
    for task in tasks:
        queue.put_nowait(task)
    workers = [asyncio.create_task(_work(run, queue)) for _ in range(concurrency)]
    waiters: set[asyncio.Task[Any]] = set(workers)
    stopper = asyncio.create_task(stop.wait()) if stop is not None else None
    if stopper is not None:
        waiters.add(stopper)
    timer = asyncio.create_task(asyncio.sleep(max(0.0, deadline_s))) if deadline_s else None
    if timer is not None:
        waiters.add(timer)
    error: str | None = None
    code: int | None = None
    try:
        while not all(w.done() for w in workers):
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            waiters -= done
            if stopper in done:
                error, code = "interrupted before every series was fetched", EXIT_NOT_READY
                break
            if timer in done:
                budget = run.config.deadline_s
                error = (
                    f"deadline of {budget:g} s (--deadline) reached before every series was fetched"
                )
                code = EXIT_NOT_READY
                break
            failed = [w for w in done if w.exception() is not None]
            if failed:
                exc = failed[0].exception()
                if not isinstance(exc, LivermoreError):
                    raise exc  # type: ignore[misc]
                error, code = str(exc), exc.exit_code
                break
    finally:
        extras = [t for t in (stopper, timer) if t is not None]
        for pending in [*workers, *extras]:
            pending.cancel()
        await asyncio.gather(*workers, *extras, return_exceptions=True)
    if error is not None:
        for key, result in run.results.items():
            if result.error == NOT_STARTED:
                run.results[key] = replace(result, error=error)
    return error, code
