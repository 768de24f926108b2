"""The request planner: for each symbol, the cheapest sources for all the series it needs.

Every target timeframe can be built from any granularity that tiles it
(:func:`~livermore_nb.timeframes.tiling`): 4h from FOUR_HOUR where the API
serves it, else from 2h, 1h, …; 1d from 1d, 6h, 4h, … Targets that use one
source share its fetch: the source is paged once over the union of their
windows. For each symbol the planner finds the grouping of its targets with
the fewest pages (then the fewest buckets, so the least parsing), each group
on the coarsest source that tiles all its members (:func:`cheapest`), counting
pages exactly as the runner sends them (:func:`fetch_span`, :func:`count_pages`).
Cold series cost little alone (one page of 300 candles), so they mostly keep
their own granularity; warm
series after a short downtime miss a few candles each, and one page of 5m
builds them all (the warm-restart folding falls out of the same count).

Nothing finer than 5m builds anything (``DERIVE_FROM_S``): a 1m page is only
5 hours, and the emulator's 1m walk is independent of its coarser candles.
An open candle cannot be built from closed ones, so ``include_open`` keeps
every series on one source.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from math import gcd
from typing import Protocol

from .memory import Capabilities, HistoryStart
from .store import SeriesInfo
from .timeframes import Timeframe, tiling

DERIVE_FROM_S = 300
"""The finest source that builds other timeframes: 5m (a 1m page holds only 5 hours)."""


class Wants(Protocol):
    """What a run asks for (BackfillConfig has these)."""

    @property
    def candles(self) -> int:
        """Closed candles wanted per series."""

    @property
    def include_open(self) -> bool:
        """Whether the open candle is written too."""

    @property
    def full(self) -> bool:
        """Whether every series is fetched whole, whatever Redis holds."""


@dataclass(frozen=True)
class Window:
    """Which candles of one target series to fetch: ``[start_s, end_s)``; ``full`` = cold."""

    start_s: int
    end_s: int
    full: bool


def holds_history(tf: Timeframe, info: SeriesInfo, history: HistoryStart | None) -> bool:
    """True when the series reaches back to where its symbol's history begins.

    The proof names the first ``proof_s`` bucket with a trade, so a finer series
    whose oldest candle lies in that bucket holds all there is.
    """
    return (
        history is not None
        and history.bounds(tf)
        and info.first_ms is not None
        and info.first_ms < (history.start_s + history.proof_s) * 1000
    )


def target_window(
    tf: Timeframe,
    info: SeriesInfo,
    now: float,
    wants: Wants,
    history: HistoryStart | None = None,
) -> Window | None:
    """The window still missing for a series, or None when no new candle can exist yet.

    A series is warm (only its newest candles are missing) when it holds the
    candles wanted, or everything since its symbol's recorded history start.
    """
    closed_end = tf.floor(now)
    end = closed_end + tf.seconds if wants.include_open else closed_end
    cold_start = end - wants.candles * tf.seconds
    enough = info.count >= wants.candles or holds_history(tf, info, history)
    if wants.full or info.last_ms is None or not enough:
        return Window(cold_start, end, True)
    last_s = info.last_ms // 1000
    if wants.include_open:
        return Window(max(last_s, cold_start), end, last_s < cold_start)
    if last_s + tf.seconds >= closed_end:
        return None
    return Window(max(last_s + tf.seconds, cold_start), end, last_s + tf.seconds < cold_start)


def clamp(tf: Timeframe, window: Window, history: HistoryStart | None) -> Window:
    """``window`` starting no earlier than the history start, where the proof covers ``tf``."""
    if history is None or not history.bounds(tf):
        return window
    start = min(max(window.start_s, tf.floor(history.start_s)), window.end_s)
    return Window(start, window.end_s, window.full)


Span = tuple[int, int]
Live = tuple[Timeframe, Window]
"""A target with a window: a series that needs a request."""


def fetch_span(source: Timeframe, windows: Sequence[Window], now: float) -> Span | None:
    """The ``[start, end)`` of ``source`` fetched for ``windows``: their union, to now's bucket."""
    if not windows:
        return None
    start = min(w.start_s for w in windows)
    end = min(max(w.end_s for w in windows), source.floor(now) + source.seconds)
    return (start, end) if end > start else None


def count_pages(source: Timeframe, span: Span | None, page_buckets: int) -> int:
    """Requests that page ``span`` at ``page_buckets`` buckets each (``page_windows``' count)."""
    if span is None:
        return 0
    return -(-(span[1] - span[0]) // (page_buckets * source.seconds))


@dataclass(frozen=True)
class Task:
    """One API series to fetch (``source`` over ``span``) and the target series built from it."""

    symbol: str
    source: Timeframe
    windows: tuple[tuple[Timeframe, Window | None], ...]
    span: Span | None
    """What is fetched; None when no target can have a new candle (no request)."""

    @property
    def targets(self) -> tuple[Timeframe, ...]:
        """The series written from this task."""
        return tuple(tf for tf, _ in self.windows)

    @property
    def cold(self) -> bool:
        """True when some target needs its whole window (and may page back for gaps)."""
        return any(w is not None and w.full for _, w in self.windows)

    def pages(self, page_buckets: int) -> int:
        """Requests this task sends when no bucket is empty."""
        return count_pages(self.source, self.span, page_buckets)

    def bounded(self, history: HistoryStart | None, now: float) -> Task:
        """The task with its windows clamped to a history start proven since it was planned."""
        if history is None:
            return self
        windows = tuple(
            (tf, None if w is None else clamp(tf, w, history)) for tf, w in self.windows
        )
        live = [w for _, w in windows if w is not None]
        return Task(self.symbol, self.source, windows, fetch_span(self.source, live, now))


def group_source(
    targets: Sequence[Timeframe], caps: Capabilities, include_open: bool
) -> Timeframe | None:
    """The cheapest source for ``targets`` together: the coarsest served one tiling them all.

    Any coarser source spans the same time in fewer buckets, so no finer one can
    cost less. One target: itself when served (4h without FOUR_HOUR: 2h). Nothing
    finer than 5m builds another timeframe, and an open candle is built from
    nothing but its own granularity's (``include_open``: no sharing).
    """
    if len(targets) > 1 and include_open:
        return None
    common = reduce(gcd, (tf.seconds for tf in targets))
    for source in tiling(targets[0]):
        alone = len(targets) == 1 and source == targets[0]
        if common % source.seconds == 0 and caps.serves(source):
            return source if alone or source.seconds >= DERIVE_FROM_S else None
    return None


Cost = tuple[int, int, int]
"""(pages, buckets, series aggregated) of a plan: requests, then parsing, then aggregation."""


def _group_cost(source: Timeframe, members: Sequence[Live], now: float, page: int) -> Cost:
    """Pages and buckets of fetching ``source`` for ``members``, and how many it aggregates."""
    span = fetch_span(source, [w for _, w in members], now)
    built = sum(tf != source for tf, _ in members)
    if span is None:
        return (0, 0, built)
    return (count_pages(source, span, page), (span[1] - span[0]) // source.seconds, built)


def cheapest(
    live: Sequence[Live], now: float, caps: Capabilities, page: int, include_open: bool
) -> list[tuple[Timeframe, list[Live]]]:
    """The partition of ``live`` targets into shared fetches of least cost, exactly.

    Each group is fetched from its :func:`group_source`; a dynamic programme over
    the subsets of targets (3^n steps: 243 for 5 timeframes, 19,683 for all 9)
    finds the cheapest partition; between equally many pages and buckets, the one
    that aggregates fewer series (less CPU per candle) wins.
    """
    n = len(live)
    groups: dict[int, tuple[Cost, Timeframe]] = {}
    for mask in range(1, 1 << n):
        members = [live[i] for i in range(n) if mask >> i & 1]
        source = group_source([tf for tf, _ in members], caps, include_open)
        if source is not None:
            groups[mask] = (_group_cost(source, members, now, page), source)
    best: dict[int, tuple[Cost, list[int]]] = {0: ((0, 0, 0), [])}
    for mask in range(1, 1 << n):
        low = mask & -mask
        found: tuple[Cost, list[int]] | None = None
        sub = mask
        while sub:
            if sub & low and sub in groups:
                (pages, buckets, built), rest = groups[sub][0], best[mask ^ sub]
                cost = (pages + rest[0][0], buckets + rest[0][1], built + rest[0][2])
                if found is None or cost < found[0]:
                    found = (cost, [sub, *rest[1]])
            sub = (sub - 1) & mask
        assert found is not None  # every single target has a source
        best[mask] = found
    return [
        (groups[sub][1], [live[i] for i in range(n) if sub >> i & 1])
        for sub in best[(1 << n) - 1][1]
    ]


def plan_symbol(
    symbol: str,
    wanted: Sequence[tuple[Timeframe, Window | None]],
    now: float,
    caps: Capabilities,
    *,
    page_buckets: int,
    include_open: bool,
    history: HistoryStart | None,
) -> list[Task]:
    """The cheapest tasks for one symbol's series (targets without a window cost nothing)."""
    live = [(tf, clamp(tf, w, history)) for tf, w in wanted if w is not None]
    tasks = []
    for source, members in cheapest(live, now, caps, page_buckets, include_open):
        windows = tuple(sorted(members, key=lambda m: m[0].seconds))
        span = fetch_span(source, [w for _, w in windows], now)
        tasks.append(Task(symbol, source, windows, span))
    for tf, w in wanted:
        if w is None:
            tasks.append(Task(symbol, tf, ((tf, None),), None))
    return tasks


WindowOf = Callable[[str, Timeframe], "Window | None"]


def plan(
    symbols: Sequence[str],
    timeframes: Sequence[Timeframe],
    window_of: WindowOf,
    now: float,
    caps: Capabilities,
    *,
    page_buckets: int,
    include_open: bool = False,
    history: Mapping[str, HistoryStart] | None = None,
) -> list[Task]:
    """Every symbol's cheapest tasks, in the order they run.

    Shortest source first, symbols interleaved; but a symbol whose history
    start is unknown runs its coarsest cold task first: if that shows where the
    history begins, one probe bounds every other series of the symbol.
    """
    history = history or {}
    memo: dict[tuple[object, ...], list[Task]] = {}
    tasks: list[Task] = []
    for symbol in symbols:
        wanted = [(tf, window_of(symbol, tf)) for tf in timeframes]
        key = (tuple(wanted), history.get(symbol))
        if key not in memo:
            memo[key] = plan_symbol(
                symbol, wanted, now, caps, page_buckets=page_buckets,
                include_open=include_open, history=history.get(symbol),
            )  # fmt: skip
        tasks += [Task(symbol, t.source, t.windows, t.span) for t in memo[key]]
    rank = {symbol: i for i, symbol in enumerate(symbols)}
    probes = {id(p) for symbol in symbols if (p := probe_of(tasks, symbol, history))}
    return sorted(tasks, key=lambda t: (id(t) not in probes, t.source.seconds, rank[t.symbol]))


def probe_of(
    tasks: Sequence[Task], symbol: str, history: Mapping[str, HistoryStart]
) -> Task | None:
    """The task that may prove ``symbol``'s history start: its coarsest cold one, if unknown."""
    if symbol in history:
        return None
    cold = [t for t in tasks if t.symbol == symbol and t.cold]
    return max(cold, key=lambda t: t.source.seconds) if cold else None


def planned_requests(tasks: Sequence[Task], page_buckets: int) -> int:
    """Requests the plan sends when no bucket is empty (gaps may add pages further back)."""
    return sum(t.pages(page_buckets) for t in tasks)
