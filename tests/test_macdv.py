"""MACD-V against TA-Lib and hand-written loops, stages, gaps and the warmup analysis."""

from __future__ import annotations

import random
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib

import livermore_nb.macdv as mod
from livermore_nb.candles import read_recorded_csv, resample
from livermore_nb.errors import ConfigError
from livermore_nb.macdv import (
    find_gaps,
    macdv,
    min_candles_for,
    stages,
    untrusted_bars,
    warmup_errors,
)

ROOT = Path(__file__).resolve().parents[1]
DATA_DIRS = (ROOT / "livermore_nb" / "data", ROOT.parent / "shared" / "data")


@cache
def real(product: str, seconds: int) -> pd.DataFrame:
    for folder in DATA_DIRS:
        path = folder / f"{product}.csv.gz"
        if path.exists():
            return resample(read_recorded_csv(path), seconds)
    pytest.skip(f"no recorded data for {product}")


def frame(high, low, close, *, step_s: int = 300, times=None) -> pd.DataFrame:
    high, low, close = (np.asarray(a, dtype="float64") for a in (high, low, close))
    if times is None:
        times = np.arange(len(close)) * step_s
    index = pd.DatetimeIndex(pd.to_datetime(np.asarray(times), unit="s", utc=True), name="time")
    return pd.DataFrame(
        {"open": close, "high": high, "low": low, "close": close, "volume": 1.0}, index=index
    )


def talib_macdv(f: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """MACD-V from TA-Lib blocks; a prepended bar closing inside bar 0 makes ATR's TR0 = H-L."""
    h, lo, c = (f[x].to_numpy() for x in ("high", "low", "close"))
    atr = talib.ATR(np.r_[h[0], h], np.r_[lo[0], lo], np.r_[c[0], c], 26)[1:]
    value = (talib.EMA(c, 12) - talib.EMA(c, 26)) / atr * 100
    signal = np.full_like(value, np.nan)
    signal[25:] = talib.EMA(value[25:], 9)
    return value, signal


CASES = [(p, s) for p in ("BTC-USD", "XTZ-USD") for s in (300, 3600)]


@pytest.mark.parametrize(("product", "seconds"), CASES)
def test_macdv_matches_talib_on_real_data(product: str, seconds: int) -> None:
    f = real(product, seconds)
    got = macdv(f)
    value, signal = talib_macdv(f)
    assert list(got.columns) == ["macdv", "signal", "histogram", "stage"]
    assert got.index.equals(f.index)
    np.testing.assert_allclose(got["macdv"], value, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got["signal"], signal, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got["histogram"], value - signal, rtol=0, atol=1e-9)
    assert got["macdv"].first_valid_index() == f.index[25]
    assert got["signal"].first_valid_index() == f.index[33]


@pytest.mark.parametrize(("product", "seconds"), CASES)
def test_building_blocks_match_talib(product: str, seconds: int) -> None:
    f = real(product, seconds)
    h, lo, c = (f[x].to_numpy() for x in ("high", "low", "close"))
    for n in (9, 12, 26):
        ema = mod._ema(c[:, None], n, 2 / (n + 1))[:, 0]
        np.testing.assert_allclose(ema, talib.EMA(c, n), rtol=0, atol=1e-9)
    # TA-Lib's ATR drops bar 0 (first value at bar 26); on the same TR series from bar 1
    # our Wilder smoothing is identical.
    tr = talib.TRANGE(h, lo, c)[1:]
    wilder = mod._ema(tr[:, None], 26, 1 / 26)[:, 0]
    expected = talib.ATR(h, lo, c, 26)[1:]
    np.testing.assert_allclose(wilder, expected, rtol=0, atol=1e-9)
    assert np.isnan(talib.ATR(h, lo, c, 26)[25])


def loop_macdv(h, lo, c, fast, slow, period, signal):
    """Plain-Python MACD-V written from the definition, independent of the module."""

    def ema(xs, n):
        out = [None] * len(xs)
        if len(xs) >= n:
            out[n - 1] = sum(xs[:n]) / n
            for i in range(n, len(xs)):
                out[i] = out[i - 1] + (xs[i] - out[i - 1]) * 2 / (n + 1)
        return out

    trs = [h[0] - lo[0]] + [
        max(h[i] - lo[i], abs(h[i] - c[i - 1]), abs(lo[i] - c[i - 1])) for i in range(1, len(c))
    ]
    atr = [None] * len(c)
    atr[period - 1] = sum(trs[:period]) / period
    for i in range(period, len(c)):
        atr[i] = (atr[i - 1] * (period - 1) + trs[i]) / period
    ef, es = ema(c, fast), ema(c, slow)
    start = max(slow, period) - 1
    values = [(ef[i] - es[i]) / atr[i] * 100 for i in range(start, len(c))]
    sig = ema(values, signal)
    pad = [None] * start
    return pad + values, pad + sig


@pytest.mark.parametrize(
    ("fast", "slow", "period", "signal", "bars"),
    [(12, 26, 26, 9, 40), (3, 5, 4, 3, 12)],
)
def test_matches_hand_loop(fast, slow, period, signal, bars) -> None:
    rng = random.Random(7)
    c = [100.0]
    for _ in range(bars - 1):
        c.append(c[-1] + rng.uniform(-2, 2))
    h = [x + rng.uniform(0, 1.5) for x in c]
    lo = [x - rng.uniform(0, 1.5) for x in c]
    got = macdv(frame(h, lo, c), fast=fast, slow=slow, atr_period=period, signal=signal)
    values, sig = loop_macdv(h, lo, c, fast, slow, period, signal)
    as_float = [np.nan if v is None else v for v in values]
    np.testing.assert_allclose(got["macdv"], as_float, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got["signal"], [np.nan if v is None else v for v in sig], atol=1e-9)


def test_flat_market_gives_nan_without_warnings() -> None:
    flat = frame([5.0] * 60, [5.0] * 60, [5.0] * 60)
    got = macdv(flat)  # filterwarnings=error: any divide warning fails here
    assert got[["macdv", "signal", "histogram"]].isna().all().all()
    assert got["stage"].map(lambda s: s is None).all()


@pytest.mark.parametrize("bars", [0, 1, 25, 26, 33])
def test_short_series_have_nan_until_enough_history(bars: int) -> None:
    f = real("BTC-USD", 3600).iloc[:bars]
    got = macdv(f, skip_gaps=True)
    assert len(got) == bars
    assert got["macdv"].notna().sum() == max(0, bars - 25)
    assert got["signal"].notna().sum() == max(0, bars - 33)
    assert find_gaps(f, 3600).empty


def test_zero_atr_then_movement_starts_late() -> None:
    c = [5.0] * 30 + [5.0 + 0.1 * i for i in range(1, 31)]
    got = macdv(frame(c, c, c))
    assert got["macdv"].first_valid_index() == got.index[30]  # first non-zero TR
    assert got["signal"].first_valid_index() == got.index[38]  # 9 valid MACD-V values
    assert got["macdv"].iloc[30:].notna().all()


@pytest.mark.parametrize(
    ("value", "signal", "stage"),
    [
        (-150.0001, 0.0, "oversold"),
        (-150.0001, -500.0, "oversold"),
        (-150.0, -200.0, "rebounding"),
        (-150.0, 0.0, "reversing"),
        (-50.0001, -100.0, "rebounding"),
        (-50.0001, 0.0, "reversing"),
        (-60.0, -60.0, "reversing"),  # equal to the signal counts as below
        (-50.0, -100.0, "ranging"),
        (-50.0, 0.0, "ranging"),
        (0.0, 0.0, "ranging"),
        (50.0, 0.0, "ranging"),
        (50.0, 100.0, "ranging"),
        (50.0001, 0.0, "rallying"),
        (50.0001, 100.0, "retracing"),
        (150.0, 100.0, "rallying"),
        (150.0, 150.0, "retracing"),
        (150.0, 200.0, "retracing"),
        (150.0001, 100.0, "overbought"),
        (150.0001, 200.0, "retracing"),
        (1e6, 1e7, "retracing"),
        (np.nan, 0.0, None),
        (0.0, np.nan, None),
    ],
)
def test_stage_boundaries(value: float, signal: float, stage: str | None) -> None:
    assert stages([value], [signal])[0] == stage


def test_stage_column_is_stages_of_the_columns() -> None:
    got = macdv(real("BTC-USD", 3600))
    assert got["stage"].dtype == object
    assert list(got["stage"]) == list(stages(got["macdv"], got["signal"]))
    assert set(got["stage"].dropna()) <= set(mod.STAGES)
    assert got["stage"].isna().sum() == 33


def test_bad_parameters_raise_config_error() -> None:
    f = real("BTC-USD", 3600)
    for kwargs in ({"fast": 26}, {"signal": 0}, {"atr_period": 2.5}, {"scale": 0.0}):
        with pytest.raises(ConfigError):
            macdv(f, **kwargs)
    with pytest.raises(ConfigError):
        macdv(f, skip_gaps=True, timeframe_seconds=0)
    with pytest.raises(ConfigError):
        find_gaps(f, 0)


def test_find_gaps_on_constructed_series() -> None:
    times = [0, 300, 600, 1500, 1800, 2100, 2700, 6000]
    f = frame([1.0] * 8, [1.0] * 8, [1.0] * 8, times=times)
    gaps = find_gaps(f, 300)
    assert list(gaps.columns) == ["start", "end", "missing"]
    as_s = lambda col: list(pd.DatetimeIndex(gaps[col]).as_unit("s").asi8)  # noqa: E731
    assert as_s("start") == [900, 2400, 3000]
    assert as_s("end") == [1500, 2700, 6000]
    assert list(gaps["missing"]) == [2, 1, 10]
    assert find_gaps(real("BTC-USD", 300), 300).empty


def test_skip_gaps_only_lowers_atr_so_xtz_macdv_grows() -> None:
    f = real("XTZ-USD", 300)
    assert len(find_gaps(f, 300)) > 1000
    plain = macdv(f)["macdv"].to_numpy()
    skipped = macdv(f, skip_gaps=True, timeframe_seconds=300)["macdv"].to_numpy()
    inferred = macdv(f, skip_gaps=True)["macdv"].to_numpy()
    np.testing.assert_array_equal(skipped, inferred)
    ok = np.isfinite(plain) & np.isfinite(skipped)
    # Same EMAs, an ATR that can only be lower: |MACD-V| never smaller, larger after gaps.
    assert (np.abs(skipped[ok]) >= np.abs(plain[ok]) * (1 - 1e-12)).all()
    assert np.percentile(np.abs(skipped[ok]), 99) > np.percentile(np.abs(plain[ok]), 99)
    btc = real("BTC-USD", 300).iloc[:500]
    pd.testing.assert_frame_equal(macdv(btc), macdv(btc, skip_gaps=True))


def analytic_warmup_error(n: int, end: int) -> float:
    """Linear closes (slope 2), H/L = close ± 1: TR0 = 2 then 3; EMA12 - EMA26 = 14 exactly."""

    def atr_at(k: int) -> float:
        return 3 - (1 / 26) * (25 / 26) ** (k - 25)

    return abs(1400 / atr_at(n - 1) - 1400 / atr_at(end))


def test_warmup_errors_on_analytic_series() -> None:
    c = 1000 + 2.0 * np.arange(1000)
    f = frame(c + 1, c - 1, c)
    ns = range(30, 401, 10)
    got = warmup_errors(f, ns, ends=50)
    assert list(got.columns) == ["ends", "last", "median", "max"]
    assert list(got.index) == list(ns)
    assert (got["ends"] == 50).all()
    expected = np.array([analytic_warmup_error(n, 999) for n in ns])
    for column in ("last", "median", "max"):
        np.testing.assert_allclose(got[column], expected, rtol=1e-9, atol=1e-8)
    # errors fall monotonically here, so the answer is the first N below the tolerance
    for tolerance in (0.1, 1.0):
        assert min_candles_for(got, tolerance) == ns[int(np.argmax(expected < tolerance))]
    assert min_candles_for(got, 0.1) == 140


def test_warmup_error_vanishes_at_full_history() -> None:
    f = real("BTC-USD", 3600)
    n = len(f)
    got = warmup_errors(f, [60, 300, n], ends=1, reference_factor=1)
    assert got.loc[n, "last"] == 0.0
    assert got.loc[300, "max"] < got.loc[60, "max"]
    assert got.loc[300, "max"] < 0.01


def test_warmup_errors_skip_n_without_enough_history() -> None:
    f = real("BTC-USD", 14400)  # ~195 4h candles
    got = warmup_errors(f, [60, 90, 100, 150])
    assert got.loc[60, "ends"] == len(f) - 119
    assert got.loc[100, "ends"] == 0
    assert np.isnan(got.loc[150, "max"])
    assert min_candles_for(got.loc[[100, 150]], 1.0) is None


def test_min_candles_for_needs_all_larger_n_below() -> None:
    errors = pd.DataFrame(
        {"max": [5.0, 0.05, 0.2, 0.09, 0.01, np.nan]}, index=[30, 40, 50, 60, 70, 80]
    )
    assert min_candles_for(errors, 0.1) == 60
    assert min_candles_for(errors, 1.0) == 40
    assert min_candles_for(errors, 10.0) == 30
    assert min_candles_for(errors, 0.001) is None


def test_untrusted_bars_are_those_resting_on_fewer_than_min_candles() -> None:
    assert untrusted_bars(300, 150) == 149  # bar 149 is the first computed from 150 candles
    assert untrusted_bars(120, 150) == 120  # all of a short series, its newest bar included
    assert untrusted_bars(150, 150) == 149 and untrusted_bars(0, 150) == 0
    assert untrusted_bars(300, 1) == untrusted_bars(300, 0) == 0


def test_public_api() -> None:
    assert set(mod.__all__) == {
        "STAGES",
        "find_gaps",
        "macdv",
        "min_candles_for",
        "untrusted_bars",
        "stages",
        "warmup_errors",
    }
