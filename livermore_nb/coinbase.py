"""The Coinbase Advanced Trade candles client: credentials, JWT signing, paging.

aiohttp errors and HTTP statuses are translated into :mod:`livermore_nb.errors`
here and nowhere else. Key material never reaches a log line, an exception
message or a ``repr``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import os
import secrets
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from .candles import (
    Candle,
    candle_time,
    dedupe_sorted,
    parse_candles_payload,
    reject_conflicts,
    strictly_descending,
)
from .errors import (
    ConfigError,
    HTTPStatusError,
    MalformedResponse,
    RateLimited,
    TransportError,
    error_for_status,
)
from .ratelimit import Pacing, RequestStats, RetryPolicy, on_rate_limited, retrying
from .timeframes import Timeframe

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.coinbase.com"
PRIVATE_PATH = "/api/v3/brokerage/products/{product}/candles"
PUBLIC_PATH = "/api/v3/brokerage/market/products/{product}/candles"
MAX_BUCKETS = 350
JWT_LIFETIME_S = 120
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
"""Most bytes read from one response, after decompression: a full page of 350
candles is about 45 kB, so anything near this is not a candles page (a gzip
bomb, a runaway body) and is rejected as malformed before it fills memory."""

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class Credentials:
    """A CDP API key: its name and the parsed private key (never shown in repr)."""

    key_name: str
    private_key: PrivateKey = field(repr=False)

    @property
    def algorithm(self) -> str:
        """JWT ``alg``: ES256 for EC P-256 keys, EdDSA for Ed25519 keys."""
        return "EdDSA" if isinstance(self.private_key, ed25519.Ed25519PrivateKey) else "ES256"


def parse_private_key(text: str) -> PrivateKey:
    """Parse an EC P-256 PEM (literal backslash-n allowed) or a base64 Ed25519 key."""
    text = text.strip().replace("\\n", "\n")
    if "-----BEGIN" in text:
        try:
            key = load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError):
            raise ConfigError("the Coinbase private key is not a readable PEM key") from None
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            return key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key
        raise ConfigError("the Coinbase private key must be EC P-256 (ES256) or Ed25519 (EdDSA)")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("the Coinbase private key is neither a PEM nor base64 Ed25519") from None
    if len(raw) not in (32, 64):
        raise ConfigError("a base64 Ed25519 key must decode to 32 or 64 bytes")
    return ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])


def read_key_file(path: Path) -> tuple[str | None, str]:
    """Read a key file: a CDP ``{"name", "privateKey"}`` JSON file or a bare key."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"key file {path} is not UTF-8 text") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("key file %s is readable by others than its owner (chmod 600 it)", path)
    if not text.lstrip().startswith(("{", "[")):
        return None, text
    try:
        doc = json.loads(text)
        name, secret = doc.get("name"), doc["privateKey"]
    except (ValueError, KeyError, AttributeError):
        raise ConfigError(f"key file {path} is not a CDP key JSON file") from None
    if not isinstance(secret, str) or not isinstance(name, str | None):
        raise ConfigError(f'key file {path}: "name" and "privateKey" must be strings')
    return name, secret


def load_credentials(env: Mapping[str, str] = os.environ) -> Credentials | None:
    """Credentials from the environment, or None to use the public endpoint."""
    name = env.get("COINBASE_API_KEY_NAME") or None
    secret = env.get("COINBASE_API_PRIVATE_KEY") or None
    key_file = env.get("COINBASE_API_PRIVATE_KEY_FILE") or None
    if secret is None and key_file is not None:
        file_name, secret = read_key_file(Path(key_file))
        name = name or file_name
    if secret is None and name is None:
        return None
    if secret is None or name is None:
        raise ConfigError(
            "set COINBASE_API_KEY_NAME together with COINBASE_API_PRIVATE_KEY "
            "or COINBASE_API_PRIVATE_KEY_FILE (or neither, for the public endpoint)"
        )
    return Credentials(name, parse_private_key(secret))


def build_jwt(credentials: Credentials, method: str, host: str, path: str, now: float) -> str:
    """A fresh request JWT: claims and headers as Coinbase's CDP keys require."""
    claims = {
        "sub": credentials.key_name,
        "iss": "cdp",
        "nbf": int(now),
        "exp": int(now) + JWT_LIFETIME_S,
        "uri": f"{method} {host}{path}",
    }
    headers = {"kid": credentials.key_name, "nonce": secrets.token_hex(16)}
    return jwt.encode(
        claims, credentials.private_key, algorithm=credentials.algorithm, headers=headers
    )


def _error_detail(body: bytes) -> str:
    """A short human detail from an error body (Coinbase's ``message``/``error_details``)."""
    try:
        doc = json.loads(body)
        parts = [doc.get(k) for k in ("message", "error_details", "error")]
        detail = ": ".join(dict.fromkeys(str(p) for p in parts[:2] if p)) or parts[2]
    except (ValueError, AttributeError):
        detail = None
    return str(detail or body[:200].decode("utf-8", "replace").strip() or "no detail")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds form only; NaN or junk = None).

    Huge values and ``inf`` pass through: :func:`~livermore_nb.ratelimit.on_rate_limited` caps them.
    """
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return None if math.isnan(seconds) else max(0.0, seconds)


async def read_bounded(content: aiohttp.StreamReader, limit: int = MAX_RESPONSE_BYTES) -> bytes:
    """The whole (decompressed) body, or MalformedResponse once it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await content.read(limit + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise MalformedResponse(f"response body larger than {limit} bytes: not a candles page")
    return b"".join(chunks)


@dataclass(frozen=True)
class Page:
    """One request's worth of buckets: ``[start_s, end_s)``."""

    start_s: int
    end_s: int


def page_windows(tf: Timeframe, start_s: int, end_s: int, page_size: int) -> list[Page]:
    """Split ``[start_s, end_s)`` into pages of ≤ ``page_size`` buckets, newest first."""
    span = page_size * tf.seconds
    pages = []
    end = end_s
    while end > start_s:
        pages.append(Page(max(start_s, end - span), end))
        end -= span
    return pages


class CoinbaseClient:
    """Fetches candles through one aiohttp session, paced, retried and validated."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        api_url: str,
        credentials: Credentials | None,
        pacer: Pacing,
        retry: RetryPolicy,
        stats: RequestStats,
        page_size: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        parts = urlsplit(api_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"API URL must be http(s)://host[:port], got {api_url!r}")
        if not 1 <= page_size <= MAX_BUCKETS:
            raise ConfigError(f"page size must be 1..{MAX_BUCKETS}, got {page_size}")
        self._session = session
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._host = parts.netloc
        self._path_prefix = parts.path.rstrip("/")
        self._credentials = credentials
        self._pacer = pacer
        self._retry = retry
        self.stats = stats
        self.page_size = page_size
        self._clock = clock
        self._key_worked = False
        """True once the key was accepted in this run: a later 401 is throttling, not rejection."""

    async def candles(self, product: str, tf: Timeframe, page: Page) -> list[Candle]:
        """One page of ``[start, end)``, newest first as sent, retried as the policy says."""
        async for attempt in retrying(self._retry, self.stats):
            with attempt:
                return await self._request(product, tf, page)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def fetch(
        self,
        product: str,
        tf: Timeframe,
        start_s: int,
        end_s: int,
        *,
        more_needed: Callable[[Sequence[Candle], int], bool] | None = None,
        max_pages: int = 20,
    ) -> tuple[list[Candle], int]:
        """Candles in ``[start_s, end_s)`` (oldest first) and where the fetched span begins.

        The window's pages are fetched concurrently. Then, while
        ``more_needed(candles, covered_start_s)``, one more page further back;
        paging back stops at an empty page (the product's history ended) or after
        ``max_pages`` pages in all.
        """
        pages = page_windows(tf, start_s, end_s, self.page_size)
        tasks = [asyncio.ensure_future(self.candles(product, tf, p)) for p in pages]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one page failed for good: the series fails, stop the others
                task.cancel()
            raise
        found = dedupe_sorted(chain.from_iterable(results))
        span = self.page_size * tf.seconds
        oldest = pages[-1].start_s if pages else end_s
        # only a whole page without a candle says the history ended; a short
        # remainder page of an illiquid product is often empty by chance
        ended = bool(pages) and not results[-1] and pages[-1].end_s - pages[-1].start_s == span
        while (
            more_needed is not None
            and len(pages) < max_pages
            and not ended
            and more_needed(found, oldest)
        ):
            page = Page(oldest - span, oldest)
            batch = await self.candles(product, tf, page)
            pages.append(page)
            found = dedupe_sorted([*reversed(found), *batch])  # newest first, as sent
            oldest, ended = page.start_s, not batch
        return found, oldest

    async def _request(self, product: str, tf: Timeframe, page: Page) -> list[Candle]:
        """Send one request (after the pacer's slot) and translate whatever comes back."""
        if tf.granularity is None:
            raise ConfigError(f"Coinbase has no {tf.name} granularity; fetch {tf.source}")
        path = (PRIVATE_PATH if self._credentials else PUBLIC_PATH).format(
            product=quote(product, safe="")
        )
        params = {"start": str(page.start_s), "end": str(page.end_s), "granularity": tf.granularity}
        body = await self._send(path, params, f"{product} {tf.name}", signed=True)
        return self._parse(body, tf, page)

    async def public_json(self, path: str, what: str) -> Any:
        """GET a public endpoint's JSON, paced, retried and counted like a candles page."""
        async for attempt in retrying(self._retry, self.stats):
            with attempt:
                body = await self._send(path, {}, what, signed=False)
                try:
                    return orjson.loads(body)
                except ValueError:
                    raise MalformedResponse(f"{what}: body is not JSON: {body[:80]!r}") from None
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _send(self, path: str, params: dict[str, str], what: str, *, signed: bool) -> bytes:
        """One request after the pacer's slot (a JWT when ``signed`` and keyed); the 200 body."""
        path = self._path_prefix + path
        await self._pacer.acquire()
        headers = {}
        if signed and self._credentials is not None:
            token = build_jwt(self._credentials, "GET", self._host, path, self._clock())
            headers["Authorization"] = f"Bearer {token}"
        self.stats.requests += 1
        try:
            async with self._session.get(
                self._origin + path, params=params, headers=headers, allow_redirects=False
            ) as resp:
                status, retry_after = resp.status, resp.headers.get("Retry-After")
                body = await read_bounded(resp.content)
        except TimeoutError:
            raise TransportError(f"{what}: request timed out") from None
        except aiohttp.ClientError as exc:
            raise TransportError(f"{what}: {type(exc).__name__}: {exc}") from None
        if status != 200:
            raise self._status_error(status, body, retry_after)
        if signed and self._credentials is not None:
            self._key_worked = True
        return body

    def _status_error(self, status: int, body: bytes, retry_after: str | None) -> HTTPStatusError:
        """The error for a non-200 answer; starts the shared cool-down for a 429.

        Redirects are never followed: only the configured API host is trusted
        with the candles. A 401 after the key already worked in this run is how
        Coinbase sometimes throttles, so it is retried like a 429 (boundedly).
        """
        if 300 <= status < 400:
            return HTTPStatusError(status, f"redirect refused: candles come only from {self._host}")
        detail = _error_detail(body)
        error = error_for_status(status, detail, _retry_after(retry_after))
        if status == 401 and self._key_worked:
            error = RateLimited(status, f"{detail} (the key worked earlier: retried as throttling)")
        if isinstance(error, RateLimited):
            on_rate_limited(error, self._pacer, self._retry, self.stats)
        return error

    @staticmethod
    def _parse(body: bytes, tf: Timeframe, page: Page) -> list[Candle]:
        """Validated candles of the page's window (some servers include ``end``)."""
        try:
            payload: Any = orjson.loads(body)
        except ValueError:
            raise MalformedResponse(f"body is not JSON: {body[:80]!r}") from None
        lo, hi = page.start_s * 1000, page.end_s * 1000
        candles = parse_candles_payload(payload, tf)
        stamps = list(map(candle_time, candles))
        if not strictly_descending(stamps):
            reject_conflicts(candles)
        if not stamps or (lo <= min(stamps) and max(stamps) < hi):
            return candles  # the usual case, checked in C
        return [c for c, ts in zip(candles, stamps, strict=True) if lo <= ts < hi]
