"""Series leases: one holder, waiters read its marker, failures and dead holders hand over."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from livermore_nb.errors import ConfigError
from livermore_nb.leases import Lease, SeriesLeases

LEASE_S = 0.4


@pytest.fixture
async def peers(redis_url: str) -> AsyncIterator[tuple[SeriesLeases, SeriesLeases]]:
    """Two processes' leases (separate connections), with a scope private to this test."""
    clients = [aioredis.from_url(redis_url) for _ in range(2)]
    scope = f"test-{uuid.uuid4().hex}"
    yield (
        SeriesLeases(clients[0], scope=scope, lease_s=LEASE_S),
        SeriesLeases(clients[1], scope=scope, lease_s=LEASE_S),
    )
    for client in clients:
        await client.aclose()


async def holds(leases: SeriesLeases, name: str) -> Lease:
    """Acquire ``name`` expecting the lease (no marker there yet)."""
    got = await leases.acquire(name)
    assert isinstance(got, Lease)
    return got


async def test_a_waiter_gets_the_marker_the_holder_left(
    peers: tuple[SeriesLeases, SeriesLeases],
) -> None:
    a, b = peers
    name = a.name("candles:1:1:BTC-USD:5m", "5m")
    lease = await holds(a, name)
    async with lease:
        waiter = asyncio.ensure_future(b.acquire(name))
        await asyncio.sleep(LEASE_S * 2)  # past the lease's own expiry: renewal keeps it ours
        assert not waiter.done()
        lease.finish(b'{"at": 1}')
    assert await waiter == b'{"at": 1}'
    assert await b.acquire(name) == b'{"at": 1}'  # later starters read it too


async def test_a_holder_that_fails_leaves_no_marker_and_a_waiter_takes_over(
    peers: tuple[SeriesLeases, SeriesLeases],
) -> None:
    a, b = peers
    name = a.name("candles:1:1:ETH-USD:1h", "1h", "4h")
    waiter = None
    with pytest.raises(RuntimeError, match="upstream gone"):
        async with await holds(a, name):
            waiter = asyncio.ensure_future(b.acquire(name))
            await asyncio.sleep(0.05)
            raise RuntimeError("upstream gone")
    assert waiter is not None
    assert isinstance(await waiter, Lease)


async def test_a_dead_holders_lease_expires_and_the_next_process_takes_it(
    peers: tuple[SeriesLeases, SeriesLeases],
) -> None:
    a, b = peers
    name = a.name("candles:1:1:DOGE-USD:1d", "1d")
    await holds(a, name)  # taken and never renewed nor released: the holder died
    started = time.monotonic()
    got = await asyncio.wait_for(b.acquire(name), timeout=LEASE_S + 2)
    assert isinstance(got, Lease)
    assert time.monotonic() - started >= LEASE_S / 2


async def test_a_waiter_passing_a_marker_by_gets_the_lease_or_a_newer_marker(
    peers: tuple[SeriesLeases, SeriesLeases],
) -> None:
    a, b = peers
    name = a.name("candles:1:1:XTZ-USD:5m", "5m")
    async with await holds(a, name) as lease:
        lease.finish(b"stale")
    assert await b.acquire(name) == b"stale"
    redo = await a.acquire(name, unless=b"stale")  # the data it names is gone: fetch again
    assert isinstance(redo, Lease)
    async with redo:
        waiter = asyncio.ensure_future(b.acquire(name, unless=b"stale"))
        await asyncio.sleep(LEASE_S)
        assert not waiter.done()
        redo.finish(b"fresh")
    assert await waiter == b"fresh"  # the refetch's marker, not a second refetch


def test_both_keys_of_a_task_share_one_cluster_slot(
    peers: tuple[SeriesLeases, SeriesLeases],
) -> None:
    a, _ = peers
    name = a.name("candles:1:1:BTC-USD:5m", "5m")
    assert key_slot(f"{name}:lease".encode()) == key_slot(f"{name}:done".encode())
    assert name != a.name("candles:1:1:BTC-USD:5m", "5m", "15m")
    assert "BTC" not in name


async def test_a_lease_must_be_positive(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    with pytest.raises(ConfigError, match="--lease"):
        SeriesLeases(client, scope="x", lease_s=0)
    await client.aclose()
