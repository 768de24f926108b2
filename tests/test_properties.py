"""Property tests (hypothesis): candle parsing, 1h→4h aggregation, the Redis round trip."""

from __future__ import annotations

import asyncio
import json
import math
import uuid

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livermore_nb.candles import Candle, aggregate, parse_candles_payload
from livermore_nb.errors import MalformedResponse
from livermore_nb.store import CandleStore
from livermore_nb.timeframes import TIMEFRAMES

H1, H4 = TIMEFRAMES["1h"], TIMEFRAMES["4h"]
T0 = 1_700_000_000 // H4.seconds * H4.seconds  # a 4h-aligned second
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

price = st.floats(min_value=1e-8, max_value=1e7, allow_nan=False, allow_infinity=False)
volume = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)


@st.composite
def candle_at(draw: st.DrawFn, ts_s: int) -> Candle:
    """A consistent candle opening at ``ts_s``: low ≤ open, close ≤ high."""
    a, b, c, d = sorted(draw(st.lists(price, min_size=4, max_size=4)))
    o, cl = draw(st.permutations([b, c]))
    return Candle(ts_s * 1000, o, d, a, cl, draw(volume))


@st.composite
def hourly_series(draw: st.DrawFn, max_hours: int = 60) -> list[Candle]:
    """Hourly candles from T0 with random gaps (hours with no trades), oldest first."""
    hours = draw(st.lists(st.integers(0, max_hours - 1), unique=True, max_size=max_hours))
    return [draw(candle_at(T0 + h * 3600)) for h in sorted(hours)]


def as_api(candle: Candle) -> dict[str, str]:
    """A candle as Coinbase sends it: every value a string."""
    ts, o, h, lo, c, v = candle
    return {"start": str(ts // 1000), "low": repr(lo), "high": repr(h), "open": repr(o),
            "close": repr(c), "volume": repr(v)}  # fmt: skip


# ---------------------------------------------------------------- parsing


@SETTINGS
@given(hourly_series())
def test_valid_payloads_parse_back_to_exactly_the_candles_sent(candles: list[Candle]) -> None:
    newest_first = [as_api(c) for c in reversed(candles)]
    parsed = parse_candles_payload({"candles": newest_first}, H1)
    assert parsed == list(reversed(candles))


BAD_VALUES = st.one_of(
    st.sampled_from(["", "abc", "1,5", "NaN", "nan", "inf", "-Infinity", "1e999", "0x10"]),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)


@SETTINGS
@given(
    hourly_series().filter(bool),
    st.data(),
    st.sampled_from(["open", "high", "low", "close", "volume"]),
    BAD_VALUES,
)
def test_a_non_numeric_value_rejects_the_whole_page(
    candles: list[Candle], data: st.DataObject, field: str, bad: object
) -> None:
    rows: list[dict[str, object]] = [dict(as_api(c)) for c in candles]
    data.draw(st.sampled_from(rows))[field] = bad
    with pytest.raises(MalformedResponse):
        parse_candles_payload({"candles": rows}, H1)


@st.composite
def broken_candle(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    """A candle broken one way: a negative value, high < low, out of range, or off the grid."""
    candle = as_api(draw(candle_at(T0)))
    kind = draw(st.sampled_from(["negative", "zero_price", "high_lt_low", "range", "grid"]))
    if kind == "negative":
        name = draw(st.sampled_from(["open", "high", "low", "close", "volume"]))
        candle[name] = repr(-draw(st.floats(min_value=1e-6, max_value=1e6)))
    elif kind == "zero_price":
        candle[draw(st.sampled_from(["open", "high", "low", "close"]))] = "0"
    elif kind == "high_lt_low":
        lo = float(candle["low"])
        candle["high"] = repr(lo * draw(st.floats(min_value=0.01, max_value=0.999)))
    elif kind == "range":
        name = draw(st.sampled_from(["open", "close"]))
        candle[name] = repr(float(candle["high"]) * draw(st.floats(min_value=1.001, max_value=9)))
    else:
        candle["start"] = str(T0 + draw(st.integers(1, 3599)))
    return kind, candle


@SETTINGS
@given(hourly_series(), broken_candle(), st.integers(0, 100))
def test_inconsistent_or_off_grid_candles_reject_the_whole_page(
    candles: list[Candle], broken: tuple[str, dict[str, str]], where: int
) -> None:
    rows = [as_api(c) for c in candles]
    rows.insert(where % (len(rows) + 1), broken[1])
    with pytest.raises(MalformedResponse):
        parse_candles_payload({"candles": rows}, H1)


# ---------------------------------------------------------------- 1h → 4h


def oracle_4h(candles: list[Candle], start_ms: int, end_ms: int) -> list[Candle]:
    """4h buckets wholly inside [start, end): first open, max high, min low, last close, Σ vol."""
    buckets: dict[int, list[Candle]] = {}
    for c in sorted(candles):
        bucket = c.timestamp - c.timestamp % H4.ms
        if bucket >= start_ms and bucket + H4.ms <= end_ms:
            buckets.setdefault(bucket, []).append(c)
    return [
        Candle(t, cs[0].open, max(c.high for c in cs), min(c.low for c in cs), cs[-1].close,
               math.fsum(c.volume for c in cs))
        for t, cs in sorted(buckets.items())
    ]  # fmt: skip


@SETTINGS
@given(hourly_series(max_hours=72), st.integers(0, 24), st.integers(48, 72))
def test_4h_aggregation_matches_a_plain_python_oracle(
    candles: list[Candle], start_h: int, end_h: int
) -> None:
    start_ms, end_ms = (T0 + start_h * 3600) * 1000, (T0 + end_h * 3600) * 1000
    got = aggregate(candles, H4, start_ms, end_ms)
    want = oracle_4h(candles, start_ms, end_ms)
    assert [c[:5] for c in got] == [c[:5] for c in want]
    for g, w in zip(got, want, strict=True):
        assert math.isclose(g.volume, w.volume, rel_tol=1e-12, abs_tol=1e-9)
        assert g.timestamp % H4.ms == 0 and g.low <= min(g.open, g.close) <= g.high


# ---------------------------------------------------------------- Redis round trip


@pytest.fixture(scope="module")
def prefix(single_redis_url: str) -> object:
    """A key namespace for this module (on the single node), deleted afterwards."""
    name = f"test:prop:{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(single_redis_url)
    keys = list(client.scan_iter(match=f"{name}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


async def _round_trip(url: str, template: str, first: list[Candle], second: list[Candle]) -> tuple:
    """Write ``first`` then ``second`` to one series; read back members, info and frame."""
    client = aioredis.from_url(url)
    try:
        store = CandleStore(client, key_template=template, keep=0, ttl=0)
        await store.write("BTC-USD", H1, first)
        info = await store.write("BTC-USD", H1, second)
        members = await client.zrange(store.key("BTC-USD", H1), 0, -1, withscores=True)
        frame = await store.read("BTC-USD", H1)
        await client.delete(store.key("BTC-USD", H1))
        return info, members, frame
    finally:
        await client.aclose()


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(hourly_series(), hourly_series())
def test_redis_round_trip_is_exact_with_one_member_per_timestamp(
    redis_url: str, prefix: str, first: list[Candle], second: list[Candle]
) -> None:
    template = f"{prefix}:{uuid.uuid4().hex[:8]}:{{symbol}}:{{timeframe}}"
    info, members, frame = asyncio.run(_round_trip(redis_url, template, first, second))
    expected = sorted({c.timestamp: c for c in [*first, *second]}.values())  # second wins
    assert [int(score) for _, score in members] == [c.timestamp for c in expected]
    docs = [json.loads(m) for m, _ in members]
    assert [
        Candle(d["timestamp"], d["open"], d["high"], d["low"], d["close"], d["volume"])
        for d in docs
    ] == expected
    assert info.count == len(expected)
    assert (info.first_ms, info.last_ms) == (
        (expected[0].timestamp, expected[-1].timestamp) if expected else (None, None)
    )
    assert frame["close"].tolist() == [c.close for c in expected]
