"""Single-flight series: of many processes starting together, one fetches each series.

Before fetching a task a process takes its lease in Redis (``SET NX PX``),
renews it while it works and, once the series are written, releases it and
leaves a *done* marker saying what it wrote. A process that finds the lease
held waits for it and then reads the marker (and Redis) instead of fetching;
a holder that dies stops renewing, its lease expires, and the next waiter
takes over. Both keys of a task share one hash tag
(``{livermore:<hash>}:lease`` and ``…:done``), so each script touches one
Redis Cluster slot.

Example::

    leases = SeriesLeases(client, scope="https://api.coinbase.com")
    got = await leases.acquire(leases.name("candles:1:1:BTC-USD:5m", "5m"))
    if isinstance(got, Lease):
        async with got:
            ...  # fetch and write, then got.finish(marker)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from .errors import ConfigError, StoreError
from .store import AsyncRedis, retry_unavailable

log = logging.getLogger(__name__)
Sleep = Callable[[float], Awaitable[None]]

LEASE_S = 10.0
"""Default lease: a dead holder's series wait this long before another process takes them."""
POLL_S = 0.1
"""How often a waiter looks at a held lease (at most a tenth of the lease)."""
DONE_TTL_MS = 60_000
"""How long a done marker stays for processes still starting."""

# KEYS = lease, done marker; ARGV = token, lease ms, a marker already found wanting ('' = none).
# Returns {"done", marker} (another marker than that), {"mine", ""} (the lease is ours now) or
# {"held", ""}. Safe to rerun after a lost reply: a lease already holding our token is ours.
CLAIM_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return {'mine', ''} end
local done = redis.call('GET', KEYS[2])
if done and done ~= ARGV[3] then return {'done', done} end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'mine', ''} end
return {'held', ''}
"""
# KEYS = lease; ARGV = token, lease ms. 1 when renewed, 0 when the lease is no longer ours.
RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS = lease, done marker; ARGV = token, marker ('' = none), marker ttl ms.
RELEASE_LUA = """
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


class SeriesLeases:
    """Claims, renews and releases task leases in Redis for one run."""

    def __init__(
        self,
        client: AsyncRedis,
        *,
        scope: str,
        lease_s: float = LEASE_S,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not lease_s > 0:
            raise ConfigError(f"--lease must be > 0 seconds, got {lease_s}")
        self.scope = scope
        self.lease_ms = max(1, round(lease_s * 1000))
        self.poll_s = min(POLL_S, lease_s / 10)
        self._sleep = sleep
        self._claim = client.register_script(CLAIM_LUA)
        self._renew = client.register_script(RENEW_LUA)
        self._release = client.register_script(RELEASE_LUA)

    def name(self, *parts: str) -> str:
        """The hash-tagged key stem of one task: a hash of the scope and ``parts``."""
        digest = hashlib.sha256("\n".join((self.scope, *parts)).encode()).hexdigest()
        return f"{{livermore:{digest[:24]}}}"

    async def acquire(self, name: str, *, unless: bytes = b"") -> Lease | bytes:
        """The lease of ``name``, or a marker a peer left there other than ``unless``.

        Waits while a peer holds the lease. A caller that found a marker wanting
        passes it as ``unless``: it then gets the lease, or the marker of the
        peer that fetched the task again meanwhile.
        """
        token = secrets.token_hex(8)
        keys = [f"{name}:lease", f"{name}:done"]
        args: list[Any] = [token, self.lease_ms, unless]
        while True:
            state, marker = await retry_unavailable(
                "claiming a series lease", lambda: self._claim(keys=keys, args=args)
            )
            if state in (b"mine", "mine"):
                return Lease(self, keys, token)
            if state in (b"done", "done"):
                return marker.encode() if isinstance(marker, str) else bytes(marker)
            await self._sleep(self.poll_s)

    async def renew(self, keys: list[str], token: str) -> bool:
        """Extend a lease we hold; False once it is no longer ours."""
        args: list[Any] = [token, self.lease_ms]
        renewed = await retry_unavailable(
            "renewing a series lease", lambda: self._renew(keys=keys[:1], args=args)
        )
        return bool(renewed)

    async def release(self, keys: list[str], token: str, marker: bytes | None) -> None:
        """Drop our lease, leaving ``marker`` (if any) for the processes waiting on it."""
        args: list[Any] = [token, marker or b"", DONE_TTL_MS]
        await retry_unavailable(
            "releasing a series lease", lambda: self._release(keys=keys, args=args)
        )


class Lease:
    """A held lease: renewed while the ``async with`` body runs, released when it ends."""

    def __init__(self, leases: SeriesLeases, keys: list[str], token: str) -> None:
        self._leases = leases
        self._keys = keys
        self._token = token
        self._marker: bytes | None = None
        self._renewer: asyncio.Task[None] | None = None

    def finish(self, marker: bytes) -> None:
        """Record what was written; waiting peers read it when the lease is released."""
        self._marker = marker

    async def _keep_alive(self) -> None:
        """Renew at a third of the lease until the body ends or the lease is lost."""
        interval = self._leases.lease_ms / 3000
        try:
            while True:
                await asyncio.sleep(interval)
                if not await self._leases.renew(self._keys, self._token):
                    log.warning("lease %s lapsed while held: a peer may fetch it", self._keys[0])
                    return
        except StoreError as exc:  # the run's own Redis calls will report it
            log.warning("could not renew lease %s: %s", self._keys[0], exc)

    async def __aenter__(self) -> Lease:
        """Start renewing."""
        self._renewer = asyncio.ensure_future(self._keep_alive())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop renewing; release, with the marker only when the body succeeded."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if exc_type is None:
            await self._leases.release(self._keys, self._token, self._marker)
            return
        with contextlib.suppress(StoreError):  # the lease expires by itself; keep the real error
            await self._leases.release(self._keys, self._token, None)
