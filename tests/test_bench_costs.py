"""The benchmark's accounting of candles per written candle, checked by hand."""

from benchmarks.costs import per_written
from livermore_nb.memory import Capabilities

NOW = 1_796_000_000 // 14_400 * 14_400 + 5_000
"""1 h 23 min into a 4h bucket."""


def test_scale_workload_parses_one_candle_per_written_where_four_hour_is_served() -> None:
    # 5m, 15m, 1h, 4h (FOUR_HOUR), 1d: 1,000 each, written as fetched. Written: 5 × 1,000.
    assert per_written(1000, now=NOW) == (1.0, 0.0)


def test_without_four_hour_4h_costs_2000_two_hour_candles() -> None:
    # 1,000 4h candles = 2,000 2h buckets parsed and aggregated; the other four as fetched
    caps = Capabilities(four_hour=False, max_buckets=350)
    assert per_written(1000, caps, NOW) == (6000 / 5000, 2000 / 5000)
