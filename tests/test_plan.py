"""The planner alone: which source builds each series, and how many pages it costs.

Page counts here are worked out by hand in the comments; ``now`` is placed at
a known phase inside its 4h bucket, because the hour within a 4h bucket moves
an hourly window by up to 3 buckets.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from livermore_nb.coinbase import page_windows
from livermore_nb.memory import Capabilities, HistoryStart
from livermore_nb.plan import (
    Task,
    Window,
    count_pages,
    fetch_span,
    plan,
    planned_requests,
    target_window,
)
from livermore_nb.store import SeriesInfo
from livermore_nb.timeframes import TIMEFRAMES, parse_timeframes, tiling

H = 3600
DAY = 86400
BUCKET_4H = 1_796_000_000 // (4 * H) * 4 * H
"""A 4h bucket start (UTC): every ``now`` below is some hours into the bucket after it."""
EMPTY = SeriesInfo(0, None, None)


@dataclass(frozen=True)
class Wants:
    candles: int = 300
    include_open: bool = False
    full: bool = False


def cold_plan(
    timeframes: str, now: float, caps: Capabilities, page: int, wants: Wants = Wants()
) -> list[Task]:
    """The plan of one cold symbol."""
    tfs = parse_timeframes(timeframes)
    return plan(
        ["SOL-USD"], tfs, lambda _, tf: target_window(tf, EMPTY, now, wants), now, caps,
        page_buckets=page, include_open=wants.include_open,
    )  # fmt: skip


def sources(tasks: list[Task]) -> dict[str, list[str]]:
    """Source name → target names, for tasks that send a request."""
    return {t.source.name: [tf.name for tf in t.targets] for t in tasks if t.span is not None}


def test_tiling_lists_every_granularity_that_divides_the_bucket() -> None:
    names = [tf.name for tf in tiling(TIMEFRAMES["4h"])]
    assert names == ["4h", "2h", "1h", "30m", "15m", "5m", "1m"]
    assert "4h" not in [tf.name for tf in tiling(TIMEFRAMES["6h"])]  # 06:00 is no 4h boundary


@pytest.mark.parametrize("hours_in", [0, 1, 2, 3])
def test_4h_from_2h_is_600_buckets_two_pages_at_any_phase(hours_in: int) -> None:
    now = BUCKET_4H + 4 * H + hours_in * H + 600
    tasks = cold_plan("4h", now, Capabilities(four_hour=False, max_buckets=350), 350)
    # 300 closed 4h buckets end at the current 4h bucket: 600 2h buckets whatever the hour
    assert sources(tasks) == {"2h": ["4h"]}
    assert tasks[0].span is not None and tasks[0].span[1] - tasks[0].span[0] == 600 * 2 * H
    assert planned_requests(tasks, 350) == 2  # 350 + 250
    assert planned_requests(tasks, 300) == 2  # 300 + 300


def test_2h_and_4h_share_601_buckets_two_pages_of_350() -> None:
    now = BUCKET_4H + 4 * H + 2.5 * H  # 2.5 h in: the newest closed 2h bucket is past the 4h one
    tasks = cold_plan("2h,4h", now, Capabilities(four_hour=False, max_buckets=350), 350)
    # 2h's 300 buckets end 2 h after 4h's 600: 601 buckets, 2 pages, where apart they cost 1 + 2
    assert sources(tasks) == {"2h": ["2h", "4h"]}
    assert planned_requests(tasks, 350) == 2


def test_four_hour_served_costs_one_page() -> None:
    now = BUCKET_4H + 4 * H + 3 * H
    tasks = cold_plan("1h,4h", now, Capabilities(four_hour=True, max_buckets=350), 350)
    assert sources(tasks) == {"1h": ["1h"], "4h": ["4h"]}
    assert planned_requests(tasks, 350) == 2


@pytest.mark.parametrize("hours_in", [0, 1, 2, 3])
@pytest.mark.parametrize(
    ("caps", "page", "per_symbol"),
    [
        (Capabilities(four_hour=True, max_buckets=350), 350, 5),  # one page per series
        (Capabilities(four_hour=True, max_buckets=300), 300, 5),
        (Capabilities(four_hour=False, max_buckets=350), 350, 6),  # 4h: 600 buckets of 2h
        (Capabilities(four_hour=False, max_buckets=300), 300, 6),
    ],
)
def test_default_cold_start_costs_the_same_at_every_phase(
    caps: Capabilities, page: int, per_symbol: int, hours_in: int
) -> None:
    now = BUCKET_4H + 4 * H + hours_in * H + 60
    tasks = cold_plan("5m,15m,1h,4h,1d", now, caps, page)
    assert planned_requests(tasks, page) == per_symbol


@pytest.mark.parametrize(("hours_in", "old_pages"), [(0, 4), (1, 5), (2, 5), (3, 5)])
def test_the_old_plan_would_have_paid_4_or_5_hourly_pages(hours_in: int, old_pages: int) -> None:
    now = BUCKET_4H + 4 * H + hours_in * H + 60
    # the old plan: 4h rode on 1h, pages of 300: 1,200 + hours_in hourly buckets
    span = fetch_span(
        TIMEFRAMES["1h"],
        [target_window(TIMEFRAMES[n], EMPTY, now, Wants()) for n in ("1h", "4h")],  # type: ignore[misc]
        now,
    )
    assert count_pages(TIMEFRAMES["1h"], span, 300) == old_pages


def test_count_pages_is_what_the_client_sends() -> None:
    for tf in TIMEFRAMES.values():
        for length in (1, 299, 300, 301, 350, 351, 601, 1203):
            span = (BUCKET_4H - length * tf.seconds, BUCKET_4H)
            for page in (1, 300, 350):
                assert count_pages(tf, span, page) == len(page_windows(tf, *span, page))


def test_a_smaller_target_shares_a_source_when_that_is_cheaper() -> None:
    now = BUCKET_4H + 4 * H + 60
    tasks = cold_plan("15m,30m", now, Capabilities(), 350, Wants(candles=100))
    # 100 × 30m = 200 buckets of 15m, which hold the 100 × 15m too: one page, not two
    assert sources(tasks) == {"15m": ["15m", "30m"]}
    tasks = cold_plan("15m,30m", now, Capabilities(), 350)
    assert sources(tasks) == {"15m": ["15m"], "30m": ["30m"]}  # 300 × 30m = 600 of 15m: 2 pages


def test_warm_series_one_page_covers_are_built_from_it() -> None:
    now = BUCKET_4H + 4 * H + 13 * 60
    windows = {  # what each series misses
        "1m": Window(int(now) - 600, int(now) // 60 * 60, False),
        "5m": None,  # fresh already: no request
        "15m": Window(BUCKET_4H + 4 * H - 1800, BUCKET_4H + 4 * H, False),
        "1h": Window(BUCKET_4H + 3 * H, BUCKET_4H + 4 * H, False),
        "4h": Window(BUCKET_4H, BUCKET_4H + 4 * H, False),
        "1d": Window(BUCKET_4H + 4 * H - 26 * H, BUCKET_4H + 4 * H - 2 * H, False),
    }
    tfs = parse_timeframes(",".join(windows))
    tasks = plan(
        ["SOL-USD"], tfs, lambda _, tf: windows[tf.name], now, Capabilities(), page_buckets=300
    )
    # one page of 15m (75 h) covers what 15m, 1h, 4h and 1d miss (26 h = 104 buckets); of 5m
    # (25 h) it would take two, so 5m builds nothing here; 1m builds nothing (5 h a page, and an
    # independent walk in the emulator)
    assert sources(tasks) == {"1m": ["1m"], "15m": ["15m", "1h", "4h", "1d"]}
    assert planned_requests(tasks, 300) == 2
    windows["5m"] = Window(BUCKET_4H + 4 * H - 600, BUCKET_4H + 4 * H, False)
    windows["1d"] = Window(BUCKET_4H - 20 * H, BUCKET_4H + 4 * H - 4 * H, False)
    tasks = plan(
        ["SOL-USD"], tfs, lambda _, tf: windows[tf.name], now, Capabilities(), page_buckets=300
    )
    # 5m now misses candles too: its one page (24 h = 288 buckets) builds every other series
    assert sources(tasks) == {"1m": ["1m"], "5m": ["5m", "15m", "1h", "4h", "1d"]}


def test_include_open_keeps_each_series_on_one_source() -> None:
    now = BUCKET_4H + 4 * H + 60
    caps = Capabilities(four_hour=False, max_buckets=350)
    tasks = cold_plan("15m,30m", now, caps, 350, Wants(candles=100, include_open=True))
    assert sources(tasks) == {"15m": ["15m"], "30m": ["30m"]}


def test_a_known_history_start_bounds_the_window_and_makes_a_short_series_warm() -> None:
    now = BUCKET_4H + 4 * H + 60
    listed = BUCKET_4H - 10 * DAY + 7 * H  # first trade 10 days ago, 07:00-ish
    history = HistoryStart(listed // DAY * DAY, DAY)
    d1, h1 = TIMEFRAMES["1d"], TIMEFRAMES["1h"]
    tasks = plan(
        ["NEW-USD"], (d1, h1), lambda _, tf: target_window(tf, EMPTY, now, Wants(), history),
        now, Capabilities(), page_buckets=350, history={"NEW-USD": history},
    )  # fmt: skip
    # the 11 days since the listing lie inside 1h's 300 hours: one page builds both
    assert sources(tasks) == {"1h": ["1h", "1d"]}
    assert planned_requests(tasks, 350) == 1
    alone = plan(
        ["NEW-USD"], (d1,), lambda _, tf: target_window(tf, EMPTY, now, Wants(), history),
        now, Capabilities(), page_buckets=350, history={"NEW-USD": history},
    )  # fmt: skip
    assert alone[0].span == (history.start_s, d1.floor(now))  # 11 days, not 300
    # a 1d series holding every day since the history start is complete, though short
    held = SeriesInfo(11, history.start_s * 1000, (d1.floor(now) - DAY) * 1000)
    assert target_window(d1, held, now, Wants(), history) is None
    cold = Window(d1.floor(now) - 300 * DAY, d1.floor(now), True)
    assert target_window(d1, held, now, Wants()) == cold


def test_a_proof_at_a_finer_granularity_does_not_bound_a_coarser_series() -> None:
    history = HistoryStart(BUCKET_4H, 300)  # an empty 5m page: 29 quiet hours, not a listing
    now = BUCKET_4H + 4 * H + 60
    d1 = TIMEFRAMES["1d"]
    tasks = plan(
        ["ICP-USD"], (d1,), lambda _, tf: target_window(tf, EMPTY, now, Wants(), history),
        now, Capabilities(), page_buckets=350, history={"ICP-USD": history},
    )  # fmt: skip
    assert tasks[0].span == (d1.floor(now) - 300 * DAY, d1.floor(now))


def test_the_history_probe_runs_first_for_symbols_whose_start_is_unknown() -> None:
    now = BUCKET_4H + 4 * H + 60
    tfs = parse_timeframes("5m,1h,1d")
    known = {"B-USD": HistoryStart(BUCKET_4H - 2000 * DAY, DAY)}
    tasks = plan(
        ["A-USD", "B-USD"], tfs, lambda _, tf: target_window(tf, EMPTY, now, Wants()),
        now, Capabilities(), page_buckets=350, history=known,
    )  # fmt: skip
    order = [(t.symbol, t.source.name) for t in tasks]
    assert order == [
        ("A-USD", "1d"),  # may prove where A's history begins: every other series then knows
        ("A-USD", "5m"), ("B-USD", "5m"), ("A-USD", "1h"), ("B-USD", "1h"), ("B-USD", "1d"),
    ]  # fmt: skip


def brute_force_pages(
    wanted: list[tuple[str, Window]], now: float, caps: Capabilities, page: int
) -> int:
    """The fewest pages over every assignment of targets to every source that tiles them."""
    from itertools import product

    from livermore_nb.plan import DERIVE_FROM_S

    options = [
        [
            s
            for s in tiling(TIMEFRAMES[n])
            if caps.serves(s) and (s.name == n or s.seconds >= DERIVE_FROM_S)
        ]
        for n, _ in wanted
    ]
    best = None
    for sources in product(*options):
        groups: dict[str, list[Window]] = {}
        for source, (_, window) in zip(sources, wanted, strict=True):
            groups.setdefault(source.name, []).append(window)
        pages = sum(
            count_pages(TIMEFRAMES[s], fetch_span(TIMEFRAMES[s], ws, now), page)
            for s, ws in groups.items()
        )
        best = pages if best is None else min(best, pages)
    assert best is not None
    return best


@pytest.mark.parametrize("seed", range(12))
def test_the_plan_is_as_cheap_as_trying_every_source(seed: int) -> None:
    import random

    rng = random.Random(seed)
    now = BUCKET_4H + 4 * H + rng.randrange(4 * H)
    caps = Capabilities(four_hour=rng.random() < 0.5, max_buckets=rng.choice([300, 350]))
    names = rng.sample(["5m", "15m", "30m", "1h", "2h", "4h", "6h", "1d"], 5)
    windows = {}
    for n in names:  # warm windows of random downtimes, some cold ones
        tf = TIMEFRAMES[n]
        info = SeriesInfo(300, 0, (tf.floor(now - rng.uniform(0, 3 * DAY)) - tf.seconds) * 1000)
        cold = rng.random() < 0.2
        windows[n] = target_window(tf, EMPTY if cold else info, now, Wants())
    live = [(n, w) for n, w in windows.items() if w is not None]
    tasks = plan(
        ["SOL-USD"], parse_timeframes(",".join(names)), lambda _, tf: windows[tf.name], now, caps,
        page_buckets=caps.page_buckets(None),
    )  # fmt: skip
    page = caps.page_buckets(None)
    assert planned_requests(tasks, page) == brute_force_pages(live, now, caps, page)
