"""The aiohttp application, the Emulator object, a thread runner and the blocking ``serve``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import signal
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from aiohttp import web

from ..errors import BadRequestError, HTTPStatusError, ProductNotFound
from ..timeframes import GRANULARITIES, TIMEFRAMES
from .config import DEFAULT_CONFIG, EmulatorConfig
from .keys import TokenRejected, check_keys, verify_token
from .series import Bars, Catalog
from .traffic import EmulatorStats, Fault, FaultPlan, RateLimiter, Recorder

PRIVATE_PATH = "/api/v3/brokerage/products/{product_id}/candles"
PUBLIC_PATH = "/api/v3/brokerage/market/products/{product_id}/candles"
TOO_MANY = "start and end argument is invalid - number of candles requested should be less than {}"
ERROR_CODES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND"}
SERVER_ERROR_BODIES: dict[int, tuple[str, str]] = {
    500: ('{"error":"INTERNAL","error_details":"internal error","message":"internal error"}',
          "application/json"),
    502: ("<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
          "</h1></center><hr><center>cloudflare</center></body></html>", "text/html"),
    503: ('{"error":"UNAVAILABLE","error_details":"service unavailable",'
          '"message":"service unavailable"}', "application/json"),
}  # fmt: skip
"""Bodies like Coinbase's (the 502 comes from its CDN, as HTML)."""
LIMIT_INVALID = "limit argument is invalid - expected a number of candles from 1 to {}"
RATE_LIMITED = {"error": "RATE_LIMIT_EXCEEDED", "message": "Too many requests"}
PRODUCTS_PATH = "/api/v3/brokerage/market/products"
compact_json = functools.partial(json.dumps, separators=(",", ":"))
"""Coinbase sends compact JSON."""


def json_reply(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A compact JSON response."""
    return web.json_response(body, status=status, headers=headers, dumps=compact_json)


def format_candles(bars: Bars) -> list[dict[str, str]]:
    """Bars (oldest first) → API candles: newest first, every value a string."""
    cols = [a[::-1].tolist() for a in bars]
    return [
        {"start": str(t), "low": str(lo), "high": str(h), "open": str(o), "close": str(c),
         "volume": str(v)}
        for t, o, h, lo, c, v in zip(*cols, strict=True)
    ]  # fmt: skip


def product_entry(product_id: str) -> dict[str, Any]:
    """One spot product as Coinbase's products endpoint lists it (the fields SDKs and ccxt read)."""
    base, _, quote = product_id.partition("-")
    return {
        "product_id": product_id, "display_name": product_id, "product_type": "SPOT",
        "status": "online", "base_currency_id": base, "quote_currency_id": quote,
        "base_display_symbol": base, "quote_display_symbol": quote,
        "base_name": base, "quote_name": quote,
        "base_increment": "0.00000001", "quote_increment": "0.00000001",
        "price_increment": "0.00000001", "base_min_size": "0.00000001",
        "base_max_size": "1000000000", "quote_min_size": "1", "quote_max_size": "10000000",
        "trading_disabled": False, "is_disabled": False, "cancel_only": False,
        "limit_only": False, "post_only": False, "auction_mode": False, "view_only": False,
        "new": False, "watched": False, "alias": "", "alias_to": [], "product_venue": "CBE",
    }  # fmt: skip


def list_products(products: list[str], query: Mapping[str, str], wanted: list[str]) -> Any:
    """The products body for ``query``: ``product_type``, ``product_ids``, ``limit``, ``offset``."""
    if query.get("product_type", "SPOT").upper() != "SPOT":
        products = []  # no futures here
    if wanted:
        products = [p for p in products if p in wanted]
    offset = int(query["offset"]) if query.get("offset", "").isdigit() else 0
    limit = int(query["limit"]) if query.get("limit", "").isdigit() else len(products)
    page = products[offset : offset + limit] if limit else products[offset:]
    return {"products": [product_entry(p) for p in page], "num_products": len(products)}


def error_response(exc: HTTPStatusError) -> web.Response:
    """A 400/404 answer with Coinbase's ``error`` / ``error_details`` / ``message`` body."""
    body = {"error": ERROR_CODES[exc.status], "error_details": exc.detail, "message": exc.detail}
    return json_reply(body, exc.status)


def served_granularities(four_hour: bool) -> dict[str, int]:
    """Granularity name → seconds answered in this regime, shortest first (FOUR_HOUR optional)."""
    table = {name: tf.seconds for name, tf in GRANULARITIES.items()}
    table["FOUR_HOUR"] = TIMEFRAMES["4h"].seconds
    if not four_hour:
        del table["FOUR_HOUR"]
    return dict(sorted(table.items(), key=lambda item: item[1]))


def limit_arg(query: Mapping[str, str]) -> int | None:
    """The optional ``limit`` argument; not a whole number → 0, which ``candles`` rejects."""
    value = query.get("limit")
    if value is None:
        return None
    return int(value) if value.isdigit() else 0


def int_arg(query: Mapping[str, str], name: str) -> int:
    """A UNIX-seconds query argument, or BadRequestError."""
    value = query.get(name, "")
    if not value.isdigit():
        raise BadRequestError(400, f"{name} argument is invalid - expected UNIX seconds")
    return int(value)


def malformed_response(candles: list[dict[str, str]], kind: str, start: int) -> web.Response:
    """A 200 whose body is truncated JSON, the wrong shape, or has a non-numeric value."""
    if kind == "truncated":
        text = compact_json({"candles": candles})
        return web.Response(text=text[: len(text) // 2], content_type="application/json")
    if kind == "shape":
        return json_reply({"data": candles})
    first = candles[0] if candles else {"start": str(start), "low": "1", "high": "1", "open": "1"}
    return json_reply({"candles": [{**first, "close": "n/a", "volume": "n/a"}, *candles[1:]]})


class Emulator:
    """A local Coinbase Advanced Trade candles API (private + public endpoints).

    Recorded products are shifted once, when the Emulator is created (``anchor``),
    so their candles never change while it runs. Use as ``async with Emulator(cfg)
    as emu: ... emu.url``.
    """

    def __init__(self, config: EmulatorConfig = DEFAULT_CONFIG) -> None:
        self.config = config
        self.anchor = config.anchor if config.anchor is not None else config.clock()
        self.url: str | None = None
        self._keys = check_keys(config.keys)
        self._catalog = Catalog(config, self.anchor)
        self._granularities = served_granularities(config.four_hour)
        self._recorder = Recorder()
        self._limits = {
            "private": RateLimiter(config.rate_limit_private),
            "public": RateLimiter(config.rate_limit_public),
        }
        self._faults = FaultPlan(config)
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None

    @property
    def stats(self) -> EmulatorStats:
        """Request statistics since start or the last reset."""
        return self._recorder.stats

    def reset_stats(self) -> None:
        """Zero the statistics and the rate-limit windows."""
        self._recorder.reset()
        for limiter in self._limits.values():
            limiter.clear()

    def products(self) -> list[str]:
        """Products listed (recorded, then synthetic; any ``SYN<digits>-USD`` also works)."""
        return self._catalog.products()

    def describe(self) -> dict[str, Any]:
        """Provenance per product: recorded span, which history is synthetic, illiquid flag."""
        return self._catalog.describe()

    def candles(
        self, product: str, granularity: str, start: int, end: int, limit: int | None = None
    ) -> list[dict[str, str]]:
        """Exactly the candles the API answers (newest first); raises the API's 400/404 errors.

        ``limit`` keeps only the newest ``limit`` candles of the window; the window
        itself must still span at most ``max_buckets`` buckets.
        """
        self._check_product(product)
        seconds = self._granularities.get(granularity)
        if seconds is None:
            valid = " ".join(self._granularities)
            raise BadRequestError(400, f"granularity argument is invalid - expected one of {valid}")
        if start > end:
            raise BadRequestError(400, "start and end argument is invalid - start is after end")
        most = self.config.max_buckets
        if math.ceil((end - start) / seconds) > most:
            raise BadRequestError(400, TOO_MANY.format(most))
        if limit is not None and not 1 <= limit <= most:
            raise BadRequestError(400, LIMIT_INVALID.format(most))
        hi = end + 1 if self.config.end_inclusive else end
        bars = self._catalog.bars(product, seconds, start, hi, self.config.clock())
        return format_candles(bars if limit is None else bars.newest(limit))

    def _check_product(self, product: str) -> None:
        """ProductNotFound unless ``product`` is served."""
        if not self._catalog.knows(product):
            raise ProductNotFound(404, f"Product {product} not supported")

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 = a free port); return the base URL."""
        app = web.Application()
        app.router.add_get(PRIVATE_PATH, self._private)
        app.router.add_get(PUBLIC_PATH, self._public)
        app.router.add_get(PRODUCTS_PATH, self._list_products)
        app.router.add_get("/_emulator/stats", self._stats)
        app.router.add_post("/_emulator/reset", self._reset)
        app.router.add_get("/_emulator/products", self._products)
        self._closing = asyncio.Event()
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=self.config.shutdown_timeout_s
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        """Stop listening, wake stalled requests and close every connection."""
        if self._closing is not None:
            self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Emulator:
        """Start on a free loopback port."""
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop."""
        await self.stop()

    async def _private(self, request: web.Request) -> web.Response:
        """The JWT-protected candles endpoint."""
        uri = f"GET {request.host}{request.path}"
        try:
            key = verify_token(
                request.headers.get("Authorization"), self._keys, uri, self.config.clock(),
                leeway_s=self.config.jwt_leeway_s, max_lifetime_s=self.config.jwt_max_lifetime_s,
            )  # fmt: skip
        except TokenRejected as exc:
            body = {"error": "UNAUTHORIZED", "error_details": str(exc), "message": "Unauthorized"}
            return await self._answer(request, "private", self._client_ip(request), body, 401)
        return await self._serve(request, "private", key)

    async def _public(self, request: web.Request) -> web.Response:
        """The unauthenticated candles endpoint, limited per client IP."""
        return await self._serve(request, "public", self._client_ip(request))

    @staticmethod
    def _client_ip(request: web.Request) -> str:
        """The peer address."""
        return request.remote or "unknown"

    async def _answer(
        self,
        request: web.Request,
        endpoint: str,
        client: str,
        body: dict[str, str],
        status: int,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        """Count and send an early answer (401 or 429) after the configured latency."""
        self._arrived(request, endpoint, client)
        await asyncio.sleep(self.config.latency_ms / 1000)
        return self._sent(json_reply(body, status, headers))

    def _arrived(self, request: web.Request, endpoint: str, client: str) -> None:
        """Record the request in the statistics."""
        series = (request.match_info["product_id"], request.query.get("granularity", ""))
        now = self.config.clock()
        self._recorder.arrival(endpoint=endpoint, client=client, series=series, now=now)

    def _sent(self, response: web.Response) -> web.Response:
        """Record the response status and pass the response on."""
        self._recorder.answered(response.status)
        return response

    async def _serve(self, request: web.Request, endpoint: str, client: str) -> web.Response:
        """Rate limit, draw a fault, then answer with candles (or the fault)."""
        if not self._limits[endpoint].allow(client, self.config.clock()):
            headers = {"Retry-After": f"{self.config.retry_after_s:g}"}
            return await self._answer(request, endpoint, client, RATE_LIMITED, 429, headers)
        self._arrived(request, endpoint, client)
        fault = self._faults.draw()
        if fault.kind:
            self._recorder.fault(fault.kind)
        await asyncio.sleep(fault.delay_s)
        return self._sent(await self._respond(request, fault))

    async def _respond(self, request: web.Request, fault: Fault) -> web.Response:
        """The candles answer, shaped by ``fault``."""
        if fault.kind == "error":
            text, content_type = SERVER_ERROR_BODIES[fault.status]
            return web.Response(text=text, status=fault.status, content_type=content_type)
        if fault.kind == "timeout" and self._closing is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.config.stall_s)
        product, query = request.match_info["product_id"], request.query
        try:
            self._check_product(product)
            start, end = int_arg(query, "start"), int_arg(query, "end")
            granularity = query.get("granularity", "")
            candles = self.candles(product, granularity, start, end, limit_arg(query))
        except HTTPStatusError as exc:
            return error_response(exc)
        if fault.kind == "malformed":
            return malformed_response(candles, fault.malformed, start)
        return json_reply({"candles": candles})

    async def _list_products(self, request: web.Request) -> web.Response:
        """``GET /api/v3/brokerage/market/products``: the listed products, public rate limit.

        Not counted in the candle statistics; rejected (429) like any public request.
        """
        if not self._limits["public"].allow(self._client_ip(request), self.config.clock()):
            headers = {"Retry-After": f"{self.config.retry_after_s:g}"}
            return json_reply(RATE_LIMITED, 429, headers)
        await asyncio.sleep(self.config.latency_ms / 1000)
        wanted = request.query.getall("product_ids", [])
        return json_reply(list_products(self.products(), request.query, wanted))

    async def _stats(self, request: web.Request) -> web.Response:
        """``GET /_emulator/stats``: the statistics and, under ``api``, the regime served."""
        return json_reply(self.stats.as_dict() | {"api": self.config.api()})

    async def _reset(self, request: web.Request) -> web.Response:
        """``POST /_emulator/reset``: zero statistics and rate windows."""
        self.reset_stats()
        return json_reply({"reset": True})

    async def _products(self, request: web.Request) -> web.Response:
        """``GET /_emulator/products``: provenance of every listed product."""
        return json_reply(self.describe())


class EmulatorThread:
    """Runs an Emulator on its own event loop in a daemon thread, for sync code and notebooks.

    ``with EmulatorThread(cfg) as emu: requests.get(emu.url + ...)``; or call
    ``start()`` / ``stop()`` yourself.
    """

    def __init__(
        self,
        config: EmulatorConfig = DEFAULT_CONFIG,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.emulator = Emulator(config)
        self.host, self.port = host, port
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> EmulatorThread:
        """Start the loop thread and the server; ``url`` is set on return."""
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(
            self.emulator.start(self.host, self.port), self._loop
        )
        self.url = started.result(timeout=30)
        return self

    def stop(self) -> None:
        """Stop the server, then the loop, and close it."""
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.emulator.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> EmulatorThread:
        """Start."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop."""
        self.stop()


def serve(config: EmulatorConfig, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run the emulator until SIGINT/SIGTERM (the ``livermore-nb emulator`` command)."""
    asyncio.run(_serve_until_signal(config, host, port))


async def _serve_until_signal(config: EmulatorConfig, host: str, port: int) -> None:
    """Start, print the URL, wait for a signal, stop cleanly."""
    emulator = Emulator(config)
    url = await emulator.start(host, port)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    recorded = sum(p["source"] == "recorded" for p in emulator.describe()["products"])
    print(
        f"livermore-nb emulator on {url} ({recorded} recorded and "
        f"{len(emulator.products()) - recorded} synthetic products, SYN<n>-USD on demand; "
        f"extended history {'ON: older candles are synthetic' if config.extend_history else 'off'}"
        f"; {regime_text(config)}); Ctrl-C to stop",
        flush=True,
    )
    try:
        await done.wait()
    finally:
        await emulator.stop()


def regime_text(config: EmulatorConfig) -> str:
    """The API regime in words, for the banner."""
    four_hour = "FOUR_HOUR served" if config.four_hour else "no FOUR_HOUR"
    return f"{four_hour}, at most {config.max_buckets} buckets per request"
