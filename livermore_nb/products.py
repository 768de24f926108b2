"""The products the API serves, and "did you mean" for symbols it does not know.

Coinbase lists its products at the public ``GET /api/v3/brokerage/market/products``
(``{"products": [{"product_id": "BTC-USD", "base_currency_id": "BTC",
"quote_currency_id": "USD", "status": "online", …}], "num_products": N}``);
the emulator serves the same shape. A typo costs nothing to catch when it is
one of syntax (``BTC/USD``, ``btcusd``: :func:`syntax_guess`, before any
request); a well-formed id the API does not know is answered by a 404, and only
then does the backfill ask for the list, once per run (:func:`close_products`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from .coinbase import CoinbaseClient
from .errors import MalformedResponse
from .ratelimit import Pacer, RequestStats, RetryPolicy

__all__ = [
    "PRODUCTS_PATH",
    "Product",
    "close_products",
    "fetch_products",
    "hints",
    "list_products",
    "parse_products",
    "syntax_guess",
]

PRODUCTS_PATH = "/api/v3/brokerage/market/products"
QUOTES: tuple[str, ...] = ("USDC", "USDT", "USD", "EUR", "GBP", "BTC", "ETH", "DAI", "SOL")
"""Quote currencies tried, longest first, to split ``BTCUSD`` into ``BTC-USD``."""
SEPARATORS = re.compile(r"[\s/_:.|]+")


@dataclass(frozen=True)
class Product:
    """One product as the products endpoint lists it."""

    product_id: str
    base: str
    quote: str
    status: str
    product_type: str

    @classmethod
    def from_api(cls, doc: Any) -> Product:
        """A Product from one entry of ``products``; MalformedResponse if it has no id."""
        if not isinstance(doc, dict) or not isinstance(doc.get("product_id"), str):
            raise MalformedResponse(f"products entry without a product_id: {str(doc)[:80]}")
        base, _, quote = doc["product_id"].partition("-")
        return cls(
            product_id=doc["product_id"],
            base=str(doc.get("base_currency_id") or base),
            quote=str(doc.get("quote_currency_id") or quote),
            status=str(doc.get("status") or ""),
            product_type=str(doc.get("product_type") or ""),
        )


def parse_products(payload: Any) -> list[Product]:
    """The products of a products response, sorted by id; MalformedResponse for another shape."""
    if not isinstance(payload, dict) or not isinstance(payload.get("products"), list):
        raise MalformedResponse("products response without a products list")
    return sorted(map(Product.from_api, payload["products"]), key=lambda p: p.product_id)


async def list_products(client: CoinbaseClient) -> list[Product]:
    """Every product the API lists: one request, paced and counted like a candles page."""
    return parse_products(await client.public_json(PRODUCTS_PATH, "products"))


def syntax_guess(symbol: str) -> str | None:
    """The product id a malformed symbol probably means (``BTC/USD``, ``btcusd`` → ``BTC-USD``)."""
    text = SEPARATORS.sub("-", symbol.strip().upper()).strip("-")
    if "-" in text:
        return text
    quote = next((q for q in QUOTES if text.endswith(q) and len(text) > len(q)), None)
    return f"{text[: -len(quote)]}-{quote}" if quote else None


def close_products(symbol: str, product_ids: Sequence[str], n: int = 3) -> list[str]:
    """Listed ids closest to ``symbol`` (its halves swapped first: ``USD-BTC`` → ``BTC-USD``)."""
    base, _, quote = symbol.partition("-")
    swapped = f"{quote}-{base}"
    first = [swapped] if quote and swapped in product_ids else []
    close = difflib.get_close_matches(symbol, product_ids, n=n, cutoff=0.6)
    return list(dict.fromkeys([*first, *close]))[:n]


def hints(unknown: Iterable[str], products: Sequence[Product]) -> dict[str, str]:
    """For each unknown symbol, the ``did you mean …?`` text (or that the API lists none close)."""
    ids = [p.product_id for p in products]
    out = {}
    for symbol in unknown:
        close = close_products(symbol, ids)
        out[symbol] = (
            f"did you mean {' or '.join(close)}?" if close else "no listed product is close"
        )
    return out


async def fetch_products(api_url: str, *, rate: float, timeout_s: float = 10.0) -> list[Product]:
    """Every product ``api_url`` lists, through a client of its own (``livermore-nb products``)."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        client = CoinbaseClient(
            session, api_url=api_url, credentials=None, pacer=Pacer(rate),
            retry=RetryPolicy(), stats=RequestStats(),
        )  # fmt: skip
        return await list_products(client)
