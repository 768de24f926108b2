"""The Redis format against a real server: key, score, member JSON, atomicity, trim, TTL."""

from __future__ import annotations

import json

import pytest
import redis

from livermore_nb.candles import Candle
from livermore_nb.errors import ConfigError, RedisUnavailable
from livermore_nb.store import (
    CandleStore,
    check_key_template,
    connect,
    member_json,
    redact_url,
)
from livermore_nb.timeframes import TIMEFRAMES

H1 = TIMEFRAMES["1h"]
T0 = 1712192400000


def hourly(n: int, start_ms: int = T0, close: float = 100.0) -> list[Candle]:
    return [
        Candle(start_ms + i * H1.ms, close + i, close + i + 2, close + i - 1, close + i + 1, 3.5)
        for i in range(n)
    ]


@pytest.fixture
async def store(redis_url: str, key_template: str):
    client = connect(redis_url)
    yield CandleStore(client, key_template=key_template, keep=1000, ttl=86400)
    await client.aclose()


def test_member_is_the_compact_json_the_indicator_service_reads() -> None:
    candle = Candle(1712192400000, 66312.4, 66331.99, 66055.14, 66181.6, 355.82896243)
    member = member_json(candle, "BTC-USD", "1h").decode()
    assert member == (
        '{"timestamp":1712192400000,"open":66312.4,"high":66331.99,"low":66055.14,'
        '"close":66181.6,"volume":355.82896243,"symbol":"BTC-USD","timeframe":"1h"}'
    )
    assert json.loads(member)["volume"] == 355.82896243


@pytest.mark.cluster
async def test_write_uses_key_score_and_member_format(store: CandleStore, sync_redis: redis.Redis):
    candles = hourly(5)
    info = await store.write("BTC-USD", H1, candles)
    key = store.key("BTC-USD", H1)
    assert key.endswith(":candles:1:1:BTC-USD:1h")
    assert sync_redis.type(key) == b"zset"
    rows = sync_redis.zrange(key, 0, -1, withscores=True)
    assert [int(score) for _, score in rows] == [c.timestamp for c in candles]
    for (member, score), candle in zip(rows, candles, strict=True):
        doc = json.loads(member)
        assert doc == {
            "timestamp": candle.timestamp,
            "open": candle.open,
            "high": candle.high,
            "low": candle.low,
            "close": candle.close,
            "volume": candle.volume,
            "symbol": "BTC-USD",
            "timeframe": "1h",
        }
        assert doc["timestamp"] == int(score)
    assert (info.count, info.first_ms, info.last_ms) == (
        5,
        candles[0].timestamp,
        candles[-1].timestamp,
    )
    assert 86000 < sync_redis.ttl(key) <= 86400


@pytest.mark.cluster
async def test_rewrite_replaces_same_timestamp_and_is_idempotent(
    store: CandleStore, sync_redis: redis.Redis
):
    await store.write("ETH-USD", H1, hourly(10))
    changed = [c._replace(close=c.close + 0.5) for c in hourly(10)[5:]]
    await store.write("ETH-USD", H1, changed)
    await store.write("ETH-USD", H1, changed)
    key = store.key("ETH-USD", H1)
    rows = sync_redis.zrange(key, 0, -1, withscores=True)
    scores = [int(s) for _, s in rows]
    assert scores == sorted(set(scores)) and len(scores) == 10
    assert [json.loads(m)["close"] for m, _ in rows[5:]] == [c.close for c in changed]


@pytest.mark.cluster
async def test_replaces_a_foreign_member_with_the_same_score(
    store: CandleStore, sync_redis: redis.Redis
):
    key = store.key("SOL-USD", H1)
    sync_redis.zadd(key, {json.dumps({"timestamp": T0, "close": 1, "isSynthetic": True}): T0})
    await store.write("SOL-USD", H1, hourly(1))
    members = sync_redis.zrangebyscore(key, T0, T0)
    assert len(members) == 1 and "isSynthetic" not in json.loads(members[0])


@pytest.mark.cluster
async def test_trim_keeps_newest_and_ttl_zero_means_no_expiry(
    redis_url: str, key_template: str, sync_redis: redis.Redis
):
    client = connect(redis_url)
    try:
        store = CandleStore(client, key_template=key_template, keep=7, ttl=0)
        candles = hourly(20)
        info = await store.write("BTC-USD", H1, candles)
        key = store.key("BTC-USD", H1)
        assert info.count == 7
        assert [int(s) for _, s in sync_redis.zrange(key, 0, -1, withscores=True)] == [
            c.timestamp for c in candles[-7:]
        ]
        assert sync_redis.ttl(key) == -1
    finally:
        await client.aclose()


@pytest.mark.cluster
async def test_info_and_read_round_trip(store: CandleStore) -> None:
    candles = hourly(12)
    await store.write("BTC-USD", H1, candles)
    infos = await store.info([("BTC-USD", H1), ("NOPE-USD", H1)])
    assert infos[0].count == 12 and infos[0].last_ms == candles[-1].timestamp
    assert (infos[1].count, infos[1].first_ms, infos[1].last_ms) == (0, None, None)
    frame = await store.read("BTC-USD", H1)
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert str(frame.index.tz) == "UTC" and frame.index.is_monotonic_increasing
    assert frame["close"].tolist() == [c.close for c in candles]
    assert int(frame.index[0].timestamp() * 1000) == candles[0].timestamp


async def test_unreachable_redis_is_reported_as_redis_unavailable() -> None:
    client = connect("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(RedisUnavailable):
            await CandleStore(client).ping()
    finally:
        await client.aclose()


def test_invalid_redis_url_is_a_config_error_without_password() -> None:
    with pytest.raises(ConfigError) as err:
        connect("htp://user:s3cret@host:6379")
    assert "s3cret" not in str(err.value)
    assert redact_url("redis://user:s3cret@h:6379/0") == "redis://user:***@h:6379/0"


@pytest.mark.parametrize(
    "template", ["candles:{symbol}", "x:{symbol}:{timeframe}:{nope}", "x:{symbol:{timeframe}"]
)
def test_bad_key_templates_are_rejected(template: str) -> None:
    with pytest.raises(ConfigError):
        check_key_template(template)


def test_alternative_key_template() -> None:
    template = "candles:{exchange_id}:{symbol}:{timeframe}"
    assert check_key_template(template) == template
