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
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from .budget import SHARED_RATE_MODES, SharedPacer, budget_key, outbound_address, shares_rate
from .candles import Candle, aggregate, candle_time, complete_buckets
from .coinbase import (
    DEFAULT_API_URL,
    CoinbaseClient,
    Credentials,
    Page,
    load_credentials,
    page_windows,
)
from .errors import (
    EXIT_NOT_READY,
    EXIT_OK,
    EXIT_REDIS,
    AuthError,
    ConfigError,
    GranularityUnsupported,
    LivermoreError,
    ProductNotFound,
    StoreError,
    UpstreamError,
)
from .leases import LEASE_S, Lease, SeriesLeases
from .memory import (
    DEFAULT_STATE_PREFIX,
    MAX_BUCKETS,
    OPTIONAL_GRANULARITIES,
    SAFE_BUCKETS,
    Capabilities,
    HistoryStart,
    Memory,
)
from .plan import Task, Window, plan, plan_symbol, planned_requests, target_window
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
    largest_gap,
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
    page_size: int | None = None
    """Buckets per request; None = the most the API accepts (350, or the smaller N it names)."""
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
    state_prefix: str = DEFAULT_STATE_PREFIX
    """Prefix of the Redis hashes that remember API capabilities and history starts."""
    api_ttl: int = 86400
    """Seconds learnt API capabilities are trusted before they are learnt again (0 = not kept)."""

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
            (
                self.page_size is None or 1 <= self.page_size <= MAX_BUCKETS,
                f"page size must be 1..{MAX_BUCKETS}, got {self.page_size}",
            ),
            (self.api_ttl >= 0, f"--api-ttl must be ≥ 0, got {self.api_ttl}"),
            (bool(self.state_prefix.strip()), "--state-prefix must not be empty"),
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


@dataclass
class RunState:
    """What a run plans from (series in Redis, history starts, the moment) and its memory."""

    config: BackfillConfig
    infos: dict[tuple[str, str], SeriesInfo]
    history: dict[str, HistoryStart]
    now: float
    memory: Memory

    def window_of(self, symbol: str, tf: Timeframe) -> Window | None:
        """The window one series still misses."""
        info = self.infos[(symbol, tf.name)]
        return target_window(tf, info, self.now, self.config, self.history.get(symbol))

    def plan(self, caps: Capabilities, page_buckets: int) -> list[Task]:
        """The run's tasks under ``caps``, in the order they run."""
        return plan(
            self.config.symbols,
            parse_timeframes(self.config.timeframes),
            self.window_of,
            self.now,
            caps,
            page_buckets=page_buckets,
            include_open=self.config.include_open,
            history=self.history,
        )

    def replan(self, task: Task, caps: Capabilities, page_buckets: int) -> list[Task]:
        """Other sources for ``task``'s targets, once the API refused its granularity."""
        return plan_symbol(
            task.symbol, task.windows, self.now, caps, page_buckets=page_buckets,
            include_open=self.config.include_open, history=self.history.get(task.symbol),
        )  # fmt: skip

    async def proved(self, symbol: str, start: HistoryStart) -> None:
        """Record where ``symbol``'s history begins, unless a coarser proof is already known."""
        known = self.history.get(symbol)
        if known is not None and known.proof_s >= start.proof_s:
            return
        self.history[symbol] = start
        await self.memory.remember_history(symbol, start)


def open_memory(config: BackfillConfig, store: CandleStore, api_url: str) -> Memory:
    """The run's memory in Redis for the API at ``api_url``."""
    host = urlsplit(api_url).netloc or api_url
    return Memory(store.client, prefix=config.state_prefix, api_host=host, api_ttl=config.api_ttl)


async def read_state(
    config: BackfillConfig, store: CandleStore, memory: Memory, now: float
) -> RunState:
    """What Redis holds for every series of ``config`` and the symbols' history starts."""
    keys = [(s, tf) for s in config.symbols for tf in parse_timeframes(config.timeframes)]
    infos = dict(zip([(s, tf.name) for s, tf in keys], await store.info(keys), strict=True))
    return RunState(config, infos, await memory.history(config.symbols), now, memory)


def first_probe(tasks: Sequence[Task], client: CoinbaseClient) -> tuple[Task, Page] | None:
    """The planned page that settles the most unknown capabilities (the first such), if any."""
    best: tuple[int, Task, Page] | None = None
    for task in tasks:
        if task.span is None:
            continue
        page = page_windows(task.source, *task.span, client.page_size)[0]
        caps = client.caps
        settles = (task.source.granularity in OPTIONAL_GRANULARITIES and caps.four_hour is None) + (
            page.buckets(task.source) > SAFE_BUCKETS and caps.max_buckets is None
        )
        if settles and (best is None or settles > best[0]):
            best = (settles, task, page)
    return None if best is None else best[1:]


async def learn_capabilities(client: CoinbaseClient, state: RunState) -> list[Task]:
    """Plan; while a planned page depends on an unknown capability, send it first, plan again.

    The probe is a page the plan sends anyway: answered, its candles are kept
    for the task and the plan stands; refused (a capability 400), the plan is
    made again without it. Each probe settles at least one of the two
    capabilities, so there are at most two.
    """
    tasks = state.plan(client.caps, client.page_size)
    for _ in range(2):
        probe = first_probe(tasks, client)
        if probe is None:
            break
        task, page = probe
        try:
            await client.probe(task.symbol, task.source, page)
        except UpstreamError:
            break  # the task meets the same error when it runs, and reports it
        tasks = state.plan(client.caps, client.page_size)
    return tasks


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
    api: dict[str, Any] = field(default_factory=dict)
    """What the API was learnt to serve: ``four_hour`` and ``max_buckets`` (None = unknown)."""

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
            "api": self.api,
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
    """One backfill run: shared client, store, memory, results and progress."""

    def __init__(
        self,
        config: BackfillConfig,
        client: CoinbaseClient,
        store: CandleStore,
        state: RunState,
        emit: EventSink,
        clock: Callable[[], float],
        leases: SeriesLeases | None = None,
    ) -> None:
        self.config = config
        self.leases = leases
        self.client = client
        self.store = store
        self.state = state
        self.infos = state.infos
        self.emit = emit
        self.clock = clock
        self.results: dict[tuple[str, str], SeriesResult] = {
            key: _failed(*key, info, NOT_STARTED) for key, info in state.infos.items()
        }
        self.unknown: set[str] = set()
        self.probing: dict[str, asyncio.Event] = {}
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()

    async def run_task(self, task: Task) -> None:
        """Fetch, derive and write the series of one task; record each outcome."""
        probe = self._history_probe(task)
        try:
            if probe is None and task.cold and task.symbol in self.probing:
                await self.probing[task.symbol].wait()
            if task.symbol in self.unknown:
                raise ProductNotFound(404, f"Product {task.symbol} not supported")
            try:
                await self._single_flight(task)
            except GranularityUnsupported:
                if self.client.caps.serves(task.source):
                    raise
                for again in self.state.replan(task, self.client.caps, self.client.page_size):
                    await self._single_flight(again)
        except (AuthError, StoreError):
            raise
        except UpstreamError as exc:
            if isinstance(exc, ProductNotFound):
                self.unknown.add(task.symbol)
            for tf in task.targets:
                self._record_failure(task.symbol, tf, str(exc))
            self.failed += len(task.targets)
        finally:
            if probe is not None:
                probe.set()
        self.done += len(task.targets)
        self._progress()

    def _history_probe(self, task: Task) -> asyncio.Event | None:
        """An event set when ``task`` ends, if it is its symbol's history probe.

        The first cold task of a symbol whose history start is unknown is the
        probe (the plan runs the coarsest one first); the symbol's other cold
        tasks wait for it, so they start bounded by what it proves. The probe is
        running by then: no worker waits for a task still queued.
        """
        if not task.cold or task.symbol in self.state.history or task.symbol in self.probing:
            return None
        self.probing[task.symbol] = asyncio.Event()
        return self.probing[task.symbol]

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
        """The task, bounded by its symbol's history start if one is known by now."""
        history = self.state.history.get(task.symbol)
        await self._fetch_and_write_bounded(task.bounded(history, self.state.now))

    async def _fetch_and_write_bounded(self, task: Task) -> None:
        todo = {tf: w for tf, w in task.windows if w is not None}
        for tf, window in task.windows:
            if window is None:
                info = self.infos[(task.symbol, tf.name)]
                self._record(task.symbol, tf, info, fetched=0, source="cached")
        if task.span is None:
            return
        cold = [(tf, w) for tf, w in todo.items() if w.full]
        history = self.state.history.get(task.symbol)
        bounded = history is not None and all(history.bounds(tf) for tf, _ in cold)
        floor_s = history.start_s if history is not None and bounded else None

        def more_needed(found: Sequence[Candle], covered_s: int) -> bool:
            if floor_s is not None and covered_s <= floor_s:
                return False  # nothing older exists
            return any(
                _count_in_window(tf, task.source, w, found, covered_s) < self.config.candles
                for tf, w in cold
            )

        found, covered_s, ended = await self.client.fetch(
            task.symbol,
            task.source,
            *task.span,
            more_needed=more_needed if cold else None,
            max_pages=self.config.max_pages,
        )
        if ended and found and cold:  # an empty page before the oldest candle
            start = HistoryStart(found[0].timestamp // 1000, task.source.seconds)
            await self.state.proved(task.symbol, start)
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
        stamps = await asyncio.gather(*(self.store.open_times(s, tf) for s, tf in too_old))
        for (symbol, tf), times in zip(too_old, stamps, strict=True):
            if times:  # (else a concurrent writer emptied it: short already says so)
                gap = largest_gap(times, tf.seconds)
                self._check_stale(symbol, tf, times[-1], now, gap)

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
        memory = open_memory(config, store, api_url)
        state = await read_state(config, store, memory, clock())
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
                capabilities=await memory.capabilities(),
            )
            remembered = replace(client.caps)
            if stop is None or not stop.is_set():
                tasks = await learn_capabilities(client, state)
            else:
                tasks = state.plan(client.caps, client.page_size)
            emit(
                {
                    "event": "backfill_start",
                    "symbols": len(config.symbols),
                    "series": len(state.infos),
                    "requests_planned": planned_requests(tasks, client.page_size),
                    "rate": rate,
                    "endpoint": "private" if credentials else "public",
                    "shared_rate": leases is not None,
                    **client.caps.as_dict(),  # four_hour, max_buckets: flat, for key=value lines
                }
            )
            run = _Run(config, client, store, state, emit, clock, leases)
            deadline = (
                config.deadline_s - (time.monotonic() - started) if config.deadline_s else None
            )
            with _fewer_collections():
                error, code = await _run_workers(run, tasks, config.concurrency, stop, deadline)
            if client.caps != remembered and code != EXIT_REDIS:
                with suppress(StoreError):  # best effort: the next run learns them again
                    await memory.remember_capabilities(client.caps)
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
        api=client.caps.as_dict(),
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


@dataclass(frozen=True)
class PlanView:
    """What a backfill would send now: its tasks, the page size, the API as known, the rate."""

    tasks: list[Task]
    page_buckets: int
    api: dict[str, Any]
    rate: float

    @property
    def requests(self) -> int:
        """Requests planned (gaps in illiquid products may add pages further back)."""
        return planned_requests(self.tasks, self.page_buckets)

    @property
    def seconds(self) -> float:
        """The least time those requests take at the rate."""
        return self.requests / self.rate

    def rows(self) -> list[dict[str, Any]]:
        """One row per series: its source, the candles missing, its task's pages, shared with."""
        out = []
        for task in self.tasks:
            pages = task.pages(self.page_buckets)
            for tf, window in task.windows:
                missing = 0 if window is None else (window.end_s - window.start_s) // tf.seconds
                others = [t.name for t in task.targets if t != tf]
                out.append(
                    {"symbol": task.symbol, "timeframe": tf.name, "source": task.source.name,
                     "missing": missing, "pages": pages, "shared_with": ",".join(others) or None}
                )  # fmt: skip
        rank = {symbol: i for i, symbol in enumerate(dict.fromkeys(t.symbol for t in self.tasks))}
        return sorted(out, key=lambda r: (rank[r["symbol"]], get_timeframe(r["timeframe"]).seconds))


async def plan_view(
    config: BackfillConfig,
    *,
    env: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
) -> PlanView:
    """The plan a backfill would run now, from Redis alone (no request is sent).

    Capabilities not learnt yet are assumed (FOUR_HOUR served, pages of 350):
    ``api`` says which are known.
    """
    env = os.environ if env is None else env
    credentials = load_credentials(env)
    api_url = config.api_url or env.get("COINBASE_API_URL") or DEFAULT_API_URL
    store = open_store(config)
    try:
        await store.ping()
        memory = open_memory(config, store, api_url)
        state = await read_state(config, store, memory, clock())
        caps = await memory.capabilities()
    finally:
        await store.client.aclose()
    page_buckets = caps.page_buckets(config.page_size)
    return PlanView(
        state.plan(caps, page_buckets),
        page_buckets,
        caps.as_dict(),
        resolve_rate(config, credentials),
    )


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
