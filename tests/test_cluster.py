"""Redis Cluster specifics: which client a URL selects, keys on every master, dead nodes.

The content checks themselves run on the cluster from the modules they belong
to (tests marked ``cluster``); this module holds what only a cluster has.
"""

from __future__ import annotations

import pytest
import redis
import redis.asyncio as aioredis
from conftest import LocalCluster, RedisServer
from redis.asyncio.connection import SSLConnection
from test_cli_backfill import run_cli

from livermore_nb import BackfillConfig, backfill
from livermore_nb.emulator import Emulator, EmulatorConfig, EmulatorThread, TestKey
from livermore_nb.errors import ConfigError, RedisUnavailable, StoreError
from livermore_nb.store import CandleStore, connect, connect_sync, redact_url, scan_keys
from livermore_nb.timeframes import TIMEFRAMES


async def test_cluster_schemes_select_the_cluster_client_and_keep_tls() -> None:
    plain, cluster, tls = (
        connect(url)
        for url in ("redis://h:1/0", "redis+cluster://h:1", "rediss+cluster://u:pw@h:1")
    )
    try:
        assert type(plain) is aioredis.Redis
        assert type(cluster) is aioredis.RedisCluster and type(tls) is aioredis.RedisCluster
        assert tls.connection_kwargs["connection_class"] is SSLConnection
        assert cluster.connection_kwargs["connection_class"] is not SSLConnection
        assert tls.connection_kwargs["password"] == "pw"
    finally:
        for client in (plain, cluster, tls):
            await client.aclose()


def test_a_cluster_has_only_db_0_and_the_error_hides_the_password() -> None:
    with pytest.raises(ConfigError, match="only db 0") as err:
        connect("redis+cluster://:s3cret@h:1/2")
    assert "s3cret" not in str(err.value)
    assert redact_url("rediss+cluster://u:s3cret@h:1") == "rediss+cluster://u:***@h:1"


async def test_a_url_may_list_several_nodes_so_a_dead_first_one_does_not_matter(
    cluster_url: str,
) -> None:
    url = cluster_url.replace("@", "@127.0.0.1:1,", 1)  # a closed port first, then a live node
    sync = connect_sync(url)
    client = connect(url)
    try:
        sync.set("test:nodes:probe", "1", ex=60)
        assert await client.get("test:nodes:probe") == b"1"
        assert len(sync.get_primaries()) == 3
    finally:
        sync.delete("test:nodes:probe")
        sync.close()
        await client.aclose()
    with pytest.raises(ConfigError, match="'nope' is not host:port") as err:
        connect("redis+cluster://:s3cret@h:1,nope")
    assert "s3cret" not in str(err.value)


async def test_an_unreachable_cluster_is_redis_unavailable_sync_and_async() -> None:
    with pytest.raises(RedisUnavailable):
        connect_sync("redis+cluster://127.0.0.1:1")  # the sync client reads the topology here
    client = connect("redis+cluster://127.0.0.1:1")
    try:
        with pytest.raises(RedisUnavailable, match="Redis"):
            await CandleStore(client).ping()
    finally:
        await client.aclose()


def test_a_single_node_behind_a_cluster_url_is_a_clear_error(redis_server: RedisServer) -> None:
    with pytest.raises(RedisUnavailable, match="Cluster mode is not enabled"):
        connect_sync(f"redis+cluster://127.0.0.1:{redis_server.port}")


@pytest.mark.parametrize("redis_url", ["cluster"], indirect=True)
async def test_series_land_on_every_master_under_their_plain_names(
    emulator: Emulator, key_env, redis_url: str, key_template: str, sync_redis
) -> None:
    assert isinstance(sync_redis, redis.RedisCluster)
    symbols = ("SOL-USD", "ADA-USD", "ICP-USD", "BTC-USD")
    cfg = BackfillConfig(
        symbols=symbols, timeframes=("5m", "1h", "4h"), redis_url=redis_url,
        key_template=key_template,
    )  # fmt: skip
    report = await backfill(cfg, env=key_env)
    assert report.ready
    prefix = key_template.split("{")[0]
    want = {f"{prefix}1:1:{s}:{tf}" for s in symbols for tf in ("5m", "1h", "4h")}
    assert set(scan_keys(sync_redis, prefix + "*")) == want
    masters = {sync_redis.get_node_from_key(key).name for key in want}
    assert len(masters) == 3  # the pipelines and scans really crossed nodes


@pytest.mark.parametrize("command", ["backfill", "coverage"])
def test_a_dead_master_exits_4_with_one_line_and_no_request(
    local_cluster: LocalCluster, ec_key: TestKey, command: str
) -> None:
    local_cluster.kill(1)
    with EmulatorThread(EmulatorConfig(keys={ec_key.name: ec_key.public_key})) as live:
        env = {
            "COINBASE_API_URL": live.url,
            "COINBASE_API_KEY_NAME": ec_key.name,
            "COINBASE_API_PRIVATE_KEY": ec_key.secret,
            "REDIS_URL": local_cluster.url,
        }
        done = run_cli(
            [command, "--symbols", "SOL-USD,ADA-USD,ICP-USD", "--timeframes", "5m,1h"], env
        )
        assert live.emulator.stats.total == 0
    assert done.returncode == 4, done.stderr
    assert done.stderr.startswith("livermore-nb: error: Redis"), done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1


async def test_a_wrong_cluster_password_is_redis_unavailable_and_not_echoed(
    cluster_url: str,
) -> None:
    wrong = cluster_url.replace("cluster-secret", "wr0ng-guess")
    with pytest.raises(RedisUnavailable) as sync_err:
        connect_sync(wrong)
    client = connect(wrong)
    try:
        with pytest.raises(RedisUnavailable) as async_err:
            await CandleStore(client).ping()
    finally:
        await client.aclose()
    for err in (sync_err, async_err):
        assert "wr0ng-guess" not in str(err.value) and "cluster-secret" not in str(err.value)


async def test_a_plain_url_on_a_cluster_node_says_to_use_the_cluster_scheme(
    cluster_url: str,
) -> None:
    client = connect(cluster_url.replace("redis+cluster://", "redis://", 1))
    series = [(f"S{i}-USD", TIMEFRAMES["1h"]) for i in range(12)]  # slots on every master
    try:
        with pytest.raises(StoreError, match=r"a Redis Cluster: use a redis\+cluster:// URL"):
            await CandleStore(client).info(series)
    finally:
        await client.aclose()
