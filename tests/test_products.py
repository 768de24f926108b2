"""Products: the emulator's products endpoint, ``livermore-nb products``, and "did you mean"."""

from __future__ import annotations

import json

import aiohttp
import pytest

from livermore_nb import BackfillConfig, backfill
from livermore_nb.backfill import parse_symbols
from livermore_nb.cli import main
from livermore_nb.emulator import Emulator, EmulatorThread
from livermore_nb.errors import ConfigError, MalformedResponse
from livermore_nb.products import (
    PRODUCTS_PATH,
    close_products,
    parse_products,
    syntax_guess,
)


@pytest.mark.parametrize(
    ("typed", "guess"),
    [
        ("BTC/USD", "BTC-USD"),
        ("btcusd", "BTC-USD"),
        ("eth_usdc", "ETH-USDC"),
        ("BTCUSDT", "BTC-USDT"),
        ("sol usd", "SOL-USD"),
        ("XYZ", None),
        ("USD", None),
    ],
)
def test_syntax_guess(typed: str, guess: str | None) -> None:
    assert syntax_guess(typed) == guess


@pytest.mark.parametrize("typed", ["BTC/USD", "btcusd", "BTC_USD"])
def test_a_malformed_symbol_is_a_config_error_with_a_guess(typed: str) -> None:
    with pytest.raises(ConfigError, match=r"did you mean BTC-USD\?"):
        parse_symbols(f"ETH-USD,{typed}")
    with pytest.raises(ConfigError, match="like BTC-USD"):
        parse_symbols("???")


def test_close_products_swaps_halves_and_catches_typos() -> None:
    ids = ["BTC-USD", "BTC-USDC", "ETH-USD", "ETH-BTC"]
    assert close_products("USD-BTC", ids)[0] == "BTC-USD"
    assert close_products("BTC-USDD", ids)[:2] == ["BTC-USD", "BTC-USDC"]
    assert close_products("ZZZ-QQQ", ids) == []


def test_parse_products_rejects_another_shape() -> None:
    with pytest.raises(MalformedResponse):
        parse_products({"candles": []})
    with pytest.raises(MalformedResponse):
        parse_products({"products": [{"id": "BTC-USD"}]})


async def test_the_emulator_lists_its_products_like_coinbase(emulator: Emulator) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(emulator.url + PRODUCTS_PATH) as resp:
            assert resp.status == 200
            body = await resp.json()
        params = [("product_ids", "BTC-USD"), ("product_ids", "SOL-USD"), ("limit", "1")]
        async with session.get(emulator.url + PRODUCTS_PATH, params=params) as resp:
            filtered = await resp.json()
        async with session.get(
            emulator.url + PRODUCTS_PATH, params={"product_type": "FUTURE"}
        ) as r:
            futures = await r.json()
    assert body["num_products"] == len(body["products"]) == len(emulator.products())
    btc = next(p for p in body["products"] if p["product_id"] == "BTC-USD")
    assert (btc["base_currency_id"], btc["quote_currency_id"], btc["status"]) == (
        "BTC",
        "USD",
        "online",
    )
    assert btc["product_type"] == "SPOT" and btc["trading_disabled"] is False
    assert [p.product_id for p in parse_products(body)] == sorted(emulator.products())
    assert filtered["num_products"] == 2 and len(filtered["products"]) == 1
    assert futures == {"products": [], "num_products": 0}


def test_products_command_lists_what_the_emulator_serves(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with EmulatorThread() as emu:
        assert main(["products", "--api-url", emu.url, "--format", "json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        monkeypatch.setenv("COINBASE_API_URL", emu.url)
        assert main(["products", "--quote", "USD"]) == 0
        out, err = capsys.readouterr()
        candle_requests = emu.emulator.stats.total
    assert {r["product_id"] for r in rows} == set(emu.emulator.products())
    assert {"product_id": "ETH-USD", "base": "ETH", "quote": "USD", "status": "online",
            "product_type": "SPOT"} in rows  # fmt: skip
    assert out.splitlines()[0].split() == ["product_id", "base", "quote", "status", "product_type"]
    assert "BTC-USD" in out and f"{len(rows)} products at {emu.url}" in err
    assert candle_requests == 0  # the products list is not a candles request


def config(redis_url: str, key_template: str, symbols: tuple[str, ...]) -> BackfillConfig:
    return BackfillConfig(
        symbols=symbols, timeframes=("1h",), candles=50, min_candles=50,
        redis_url=redis_url, key_template=key_template,
    )  # fmt: skip


async def test_an_unknown_product_gets_a_did_you_mean_for_one_extra_request(
    emulator: Emulator, key_env, redis_url: str, key_template: str
) -> None:
    report = await backfill(config(redis_url, key_template, ("SOL-USD", "BTC-USDD")), env=key_env)
    errors = {s.symbol: s.error for s in report.series}
    assert errors["SOL-USD"] is None
    assert "not supported; did you mean BTC-USD" in errors["BTC-USDD"]
    assert report.requests == emulator.stats.total + 1  # the 404, then one products request


async def test_a_run_of_known_products_asks_for_no_product_list(
    emulator: Emulator, key_env, redis_url: str, key_template: str
) -> None:
    report = await backfill(config(redis_url, key_template, ("SOL-USD", "ETH-USD")), env=key_env)
    assert report.ready and report.requests == emulator.stats.total == 2


async def test_without_a_products_list_the_404_stands_alone(redis_url: str, key_template: str):
    from aiohttp import web

    async def not_found(request: web.Request) -> web.Response:
        body = {"error": "NOT_FOUND", "message": f"{request.path} not found"}
        return web.json_response(body, status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", not_found)  # no product exists, and no products list
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        report = await backfill(
            config(redis_url, key_template, ("BTC-USDD",)), env={"COINBASE_API_URL": url}
        )
    finally:
        await runner.cleanup()
    (series,) = report.series
    assert series.status == "failed" and series.error.startswith("HTTP 404")
    assert "did you mean" not in series.error and report.requests == 2
