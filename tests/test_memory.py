"""What runs learn and keep in Redis, and the 400s they learn it from."""

from __future__ import annotations

import redis.asyncio as aioredis

from livermore_nb.errors import BadRequestError, GranularityUnsupported, TooManyBuckets, bad_request
from livermore_nb.memory import Capabilities, HistoryStart, Memory
from livermore_nb.timeframes import TIMEFRAMES


def test_the_two_capability_answers_have_their_own_errors() -> None:
    too_many = bad_request(
        "start and end argument is invalid - number of candles requested should be less than 300"
    )
    assert isinstance(too_many, TooManyBuckets) and too_many.limit == 300
    unknown = bad_request("granularity argument is invalid - expected one of ONE_MINUTE …")
    assert isinstance(unknown, GranularityUnsupported)
    plain = bad_request("start and end argument is invalid - start is after end")
    assert type(plain) is BadRequestError


def test_unknown_capabilities_are_assumed_as_documented_today() -> None:
    caps = Capabilities()
    four, five = TIMEFRAMES["4h"], TIMEFRAMES["5m"]
    assert caps.serves(four) and caps.page_buckets(None) == 350 and caps.page_buckets(200) == 200
    assert caps.unknown(four, 10) and caps.unknown(five, 301) and not caps.unknown(five, 300)
    caps.four_hour, caps.max_buckets = False, 300
    assert not caps.serves(four) and caps.serves(five) and caps.page_buckets(None) == 300
    assert not caps.unknown(four, 350)


async def test_memory_round_trips_in_one_hash_each(redis_url: str, key_template: str) -> None:
    client = aioredis.from_url(redis_url)
    prefix = key_template.split(":candles:")[0]
    memory = Memory(client, prefix=prefix, api_host="api.example:443", api_ttl=60)
    try:
        assert await memory.capabilities() == Capabilities()
        await memory.remember_capabilities(Capabilities(four_hour=False, max_buckets=None))
        assert await memory.capabilities() == Capabilities(four_hour=False, max_buckets=None)
        assert 0 < await client.ttl(f"{prefix}:api:api.example:443") <= 60
        assert await memory.history(["A-USD", "B-USD"]) == {}
        await memory.remember_history("A-USD", HistoryStart(1_700_000_000, 86400))
        assert await memory.history(["A-USD", "B-USD"]) == {
            "A-USD": HistoryStart(1_700_000_000, 86400)
        }
        assert await client.type(f"{prefix}:history:api.example:443") == b"hash"
    finally:
        await client.aclose()


async def test_nothing_is_kept_with_a_zero_ttl(redis_url: str, key_template: str) -> None:
    client = aioredis.from_url(redis_url)
    prefix = key_template.split(":candles:")[0]
    memory = Memory(client, prefix=prefix, api_host="h", api_ttl=0)
    try:
        await memory.remember_capabilities(Capabilities(four_hour=True, max_buckets=350))
        assert await memory.capabilities() == Capabilities()
    finally:
        await client.aclose()
