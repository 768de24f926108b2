"""The benchmark's accounting of candles per written candle, checked by hand."""

from benchmarks.costs import per_written


def test_scale_workload_parses_seven_candles_per_five_written() -> None:
    # 5m, 15m, 1d: 1,000 each, written as fetched; 1h: 4,000 fetched for 1,000 4h candles,
    # the newest 1,000 of which are the 1h series. Written: 5 × 1,000.
    received, aggregated = per_written(1000)
    assert received == 7000 / 5000
    assert aggregated == 4000 / 5000
