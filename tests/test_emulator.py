"""The Coinbase emulator over real loopback HTTP: data, limits, auth, faults, stats."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from livermore_nb.candles import Candle, parse_candle
from livermore_nb.candles import aggregate as aggregate_candles
from livermore_nb.cli import main
from livermore_nb.emulator import (
    Emulator,
    EmulatorConfig,
    EmulatorThread,
    TestKey,
    load_public_keys,
    make_test_key,
    write_key_file,
)
from livermore_nb.emulator.series import ENTRY_BYTES, Bars, BlockCache
from livermore_nb.errors import ConfigError
from livermore_nb.timeframes import GRANULARITIES, TIMEFRAMES, Timeframe

DATA = Path(__file__).resolve().parent.parent / "livermore_nb" / "data"
ANCHOR = 1_735_700_745.6  # 2025-01-01 03:05:45.6 UTC
PRIVATE = "/api/v3/brokerage/products/{}/candles"
PUBLIC = "/api/v3/brokerage/market/products/{}/candles"
SERVED: dict[str, Timeframe] = GRANULARITIES | {"FOUR_HOUR": TIMEFRAMES["4h"]}
"""Every granularity the emulator can serve (FOUR_HOUR only with ``four_hour=True``)."""


def invalid(details: str) -> dict[str, str]:
    """Coinbase's 400 body."""
    return {"error": "INVALID_ARGUMENT", "error_details": details, "message": details}


def too_many(n: int) -> dict[str, str]:
    """Coinbase's 400 body for a window of more than ``n`` buckets."""
    return invalid(
        f"start and end argument is invalid - number of candles requested should be less than {n}"
    )


TOO_MANY = too_many(350)
FIELDS = {"start", "low", "high", "open", "close", "volume"}


class FakeClock:
    """A wall clock that moves only when told to."""

    def __init__(self, now: float = ANCHOR) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any
    text: str


def config(**overrides: Any) -> EmulatorConfig:
    """Unlimited rates and a fixed clock unless a test says otherwise."""
    base: dict[str, Any] = {
        "clock": FakeClock(),
        "rate_limit_private": 0,
        "rate_limit_public": 0,
    }
    return EmulatorConfig(**(base | overrides))


@contextlib.asynccontextmanager
async def serving(**overrides: Any) -> AsyncIterator[Emulator]:
    async with Emulator(config(**overrides)) as emu:
        yield emu


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with serving() as emu:
        yield emu


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def window(granularity: str, buckets: int, now: float = ANCHOR) -> dict[str, str]:
    """Query for the ``buckets`` buckets ending with the open one."""
    g = SERVED[granularity].seconds
    end = int(now // g * g + g)
    return {"start": str(end - buckets * g), "end": str(end), "granularity": granularity}


async def fetch(
    session: aiohttp.ClientSession,
    emu: Emulator,
    product: str = "BTC-USD",
    params: dict[str, str] | None = None,
    *,
    path: str = PUBLIC,
    headers: dict[str, str] | None = None,
    client_timeout_s: float = 10,
) -> Reply:
    url = f"{emu.url}{path.format(product)}"
    params = window("ONE_HOUR", 10) if params is None else params
    to = aiohttp.ClientTimeout(total=client_timeout_s)
    async with session.get(url, params=params, headers=headers, timeout=to) as r:
        text = await r.text()
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = text
        return Reply(r.status, body, r.headers, text)


def sign(
    key: TestKey,
    uri: str,
    now: float = ANCHOR,
    *,
    kid: str | None = None,
    iss: str = "cdp",
    lifetime: float = 120,
    nbf_offset: float = 0,
) -> dict[str, str]:
    """An Authorization header signed with PyJWT straight from the key's secret."""
    private: Any
    if key.secret.startswith("-----BEGIN EC PRIVATE KEY-----"):
        private, alg = key.secret, "ES256"
    else:
        seed = base64.b64decode(key.secret)[:32]
        private, alg = ed25519.Ed25519PrivateKey.from_private_bytes(seed), "EdDSA"
    nbf = int(now + nbf_offset)
    claims = {"sub": key.name, "iss": iss, "nbf": nbf, "exp": nbf + lifetime, "uri": uri}
    headers = {"kid": kid or key.name, "nonce": secrets.token_hex(16)}
    token = jwt.encode(claims, private, algorithm=alg, headers=headers)
    return {"Authorization": f"Bearer {token}"}


def uri_for(emu: Emulator, product: str = "BTC-USD") -> str:
    assert emu.url is not None
    return f"GET {emu.url.removeprefix('http://')}{PRIVATE.format(product)}"


def recorded_minutes(product: str, anchor: float = ANCHOR) -> pd.DataFrame:
    """The recorded CSV read with plain pandas and shifted like the emulator promises."""
    raw = pd.read_csv(DATA / f"{product}.csv.gz").drop_duplicates("time")
    epoch = pd.Timestamp(0, tz="UTC")
    t = (pd.to_datetime(raw["time"], utc=True) - epoch) // pd.Timedelta(seconds=1)
    shift = int(anchor // 60) * 60 - int(t.max())
    return raw.assign(t=t + shift).sort_values("t").set_index("t")


def aggregate(minutes: pd.DataFrame, lo: int, hi: int) -> dict[str, float]:
    part = minutes.loc[lo : hi - 1]
    return {
        "open": part["open"].iloc[0],
        "high": part["high"].max(),
        "low": part["low"].min(),
        "close": part["close"].iloc[-1],
        "volume": part["volume"].sum(),
    }


def as_floats(candle: dict[str, str]) -> dict[str, float]:
    return {k: float(v) for k, v in candle.items() if k != "start"}


# --- shape and data -------------------------------------------------------------------


async def test_candles_newest_first_as_strings(emu: Emulator, session: aiohttp.ClientSession):
    reply = await fetch(session, emu, "BTC-USD", window("FIVE_MINUTE", 300))
    candles = reply.body["candles"]
    starts = [int(c["start"]) for c in candles]
    assert reply.status == 200
    assert len(candles) == 300
    assert starts == sorted(starts, reverse=True)
    assert all(set(c) == FIELDS and all(isinstance(v, str) for v in c.values()) for c in candles)
    assert candles == emu.candles("BTC-USD", "FIVE_MINUTE", starts[-1], starts[0] + 300)


async def test_newest_minute_is_the_last_recorded_one(emu: Emulator, session):
    reply = await fetch(session, emu, "BTC-USD", window("ONE_MINUTE", 5))
    newest = reply.body["candles"][0]
    # the first data row of BTC-USD.csv.gz: 2023-12-29 17:55:00,41822.14,41835.0,41833.79,41834.73
    assert int(newest["start"]) == int(ANCHOR // 60 * 60)
    assert (newest["low"], newest["high"], newest["open"], newest["close"]) == (
        "41822.14",
        "41835.0",
        "41833.79",
        "41834.73",
    )


@pytest.mark.parametrize("granularity", list(SERVED))
async def test_open_candle_is_the_data_up_to_now(emu: Emulator, session, granularity: str):
    g = SERVED[granularity].seconds
    reply = await fetch(session, emu, "ETH-USD", window(granularity, 3))
    open_start = int(ANCHOR // g * g)
    newest = reply.body["candles"][0]
    expected = aggregate(recorded_minutes("ETH-USD"), open_start, int(ANCHOR) + 1)
    assert int(newest["start"]) == open_start
    assert as_floats(newest) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("granularity", list(SERVED))
async def test_closed_candle_equals_independent_aggregation(emu, session, granularity: str):
    g = SERVED[granularity].seconds
    bucket = int((ANCHOR - 20 * 86400) // g * g)  # wholly inside the recorded span
    params = {"start": str(bucket), "end": str(bucket + g), "granularity": granularity}
    reply = await fetch(session, emu, "ETH-USD", params)
    (candle,) = reply.body["candles"]
    expected = aggregate(recorded_minutes("ETH-USD"), bucket, bucket + g)
    assert int(candle["start"]) == bucket
    assert as_floats(candle) == pytest.approx(expected, rel=1e-12)


async def test_illiquid_recorded_minutes_are_omitted(emu: Emulator, session):
    reply = await fetch(session, emu, "XTZ-USD", window("ONE_MINUTE", 300))
    starts = {int(c["start"]) for c in reply.body["candles"]}
    minutes = recorded_minutes("XTZ-USD")
    end = int(ANCHOR // 60 * 60 + 60)
    traded = {t for t in minutes.index if end - 300 * 60 <= t < end}
    assert 0 < len(starts) < 300
    assert starts == traded


async def test_range_is_start_inclusive_end_exclusive(emu: Emulator, session):
    t0 = int((ANCHOR - 86400) // 3600 * 3600)
    exact = await fetch(session, emu, params={"start": str(t0), "end": str(t0 + 3 * 3600),
                                              "granularity": "ONE_HOUR"})  # fmt: skip
    shifted = await fetch(session, emu, params={"start": str(t0 + 1), "end": str(t0 + 3 * 3600),
                                                "granularity": "ONE_HOUR"})  # fmt: skip
    assert [int(c["start"]) for c in exact.body["candles"]] == [t0 + 7200, t0 + 3600, t0]
    assert [int(c["start"]) for c in shifted.body["candles"]] == [t0 + 7200, t0 + 3600]


async def test_end_inclusive_option_includes_the_end_bucket(session):
    t0 = int((ANCHOR - 86400) // 3600 * 3600)
    params = {"start": str(t0), "end": str(t0 + 3 * 3600), "granularity": "ONE_HOUR"}
    async with serving(end_inclusive=True) as emu:
        reply = await fetch(session, emu, params=params)
    assert [int(c["start"]) for c in reply.body["candles"]] == [t0 + h * 3600 for h in (3, 2, 1, 0)]


# --- errors ---------------------------------------------------------------------------


async def test_350_buckets_ok_351_rejected_with_exact_body(emu: Emulator, session):
    ok = await fetch(session, emu, params=window("ONE_MINUTE", 350))
    over = await fetch(session, emu, params=window("ONE_MINUTE", 351))
    assert ok.status == 200
    assert len(ok.body["candles"]) == 350
    assert over.status == 400
    assert over.body == TOO_MANY
    assert over.text == json.dumps(TOO_MANY, separators=(",", ":"))  # compact, like Coinbase


@pytest.mark.parametrize(
    "params",
    [
        {"end": "1735700000", "granularity": "ONE_HOUR"},
        {"start": "1735600000", "end": "soon", "granularity": "ONE_HOUR"},
        {"start": "1735600000", "end": "1735700000"},
        {"start": "1735700000", "end": "1735600000", "granularity": "ONE_HOUR"},
    ],
    ids=["missing-start", "bad-end", "no-granularity", "start-after-end"],
)
async def test_invalid_arguments_are_400(emu: Emulator, session, params: dict[str, str]):
    reply = await fetch(session, emu, params=params)
    assert reply.status == 400
    assert reply.body["error"] == "INVALID_ARGUMENT"
    assert reply.body["message"] == reply.body["error_details"]
    assert "invalid" in reply.body["message"]


async def test_unknown_product_is_404(emu: Emulator, session):
    reply = await fetch(session, emu, "NOPE-USD")
    assert reply.status == 404
    assert reply.body == {
        "error": "NOT_FOUND",
        "error_details": "Product NOPE-USD not supported",
        "message": "Product NOPE-USD not supported",
    }


# --- API regimes: FOUR_HOUR on or off, the page limit, ``limit`` ----------------------

WITHOUT_FOUR_HOUR = (
    "granularity argument is invalid - expected one of ONE_MINUTE FIVE_MINUTE FIFTEEN_MINUTE "
    "THIRTY_MINUTE ONE_HOUR TWO_HOUR SIX_HOUR ONE_DAY"
)


def test_default_regime_is_todays_api():
    assert EmulatorConfig().api() == {"four_hour": True, "max_buckets": 350}


async def test_four_hour_is_an_unknown_granularity_when_not_served(session):
    unknown = {"start": "1735600000", "end": "1735700000", "granularity": "THREE_HOUR"}
    async with serving(four_hour=False) as emu:
        four = await fetch(session, emu, params=window("FOUR_HOUR", 10))
        other = await fetch(session, emu, params=unknown)
        hourly = await fetch(session, emu, params=window("ONE_HOUR", 10))
    assert four.status == other.status == 400
    assert four.body == other.body == invalid(WITHOUT_FOUR_HOUR)
    assert hourly.status == 200


async def test_four_hour_candles_are_utc_aligned_when_served(session):
    async with serving(four_hour=True) as emu:
        reply = await fetch(session, emu, "SOL-USD", window("FOUR_HOUR", 300))
        other = await fetch(session, emu, params=window("FOUR_HOUR", 1) | {"granularity": "X"})
    starts = [int(c["start"]) for c in reply.body["candles"]]
    assert reply.status == 200
    assert len(starts) == 300
    assert all(t % (4 * 3600) == 0 for t in starts)  # 00:00, 04:00, ... UTC
    assert starts[0] == int(ANCHOR // 86400 * 86400)  # 03:05 UTC: the open bucket began at 00:00
    assert other.body["message"].endswith("ONE_HOUR TWO_HOUR FOUR_HOUR SIX_HOUR ONE_DAY")


@pytest.mark.parametrize("max_buckets", [300, 350, 7])
async def test_max_buckets_is_the_page_limit_with_coinbases_body(session, max_buckets: int):
    async with serving(max_buckets=max_buckets) as emu:
        ok = await fetch(session, emu, params=window("ONE_MINUTE", max_buckets))
        over = await fetch(session, emu, params=window("ONE_MINUTE", max_buckets + 1))
        end = int(ok.body["candles"][0]["start"]) + 60
        second_more = {"start": str(end - max_buckets * 60 - 1), "end": str(end)}
        part = await fetch(session, emu, params=second_more | {"granularity": "ONE_MINUTE"})
    assert ok.status == 200
    assert len(ok.body["candles"]) == max_buckets
    assert over.status == part.status == 400  # buckets = ceil((end - start) / granularity)
    assert over.text == part.text == json.dumps(too_many(max_buckets), separators=(",", ":"))


def test_max_buckets_must_be_positive():
    with pytest.raises(ConfigError, match="max_buckets"):
        EmulatorConfig(max_buckets=0)


async def test_limit_keeps_the_newest_candles_newest_first(session):
    params = window("ONE_HOUR", 300)
    async with serving() as emu:
        whole = (await fetch(session, emu, "ICP-USD", params)).body["candles"]
        limited = {
            n: (await fetch(session, emu, "ICP-USD", params | {"limit": str(n)})).body["candles"]
            for n in (1, 10, 299, 350)
        }
        over = await fetch(session, emu, "ICP-USD", window("ONE_HOUR", 351) | {"limit": "10"})
    assert 10 < len(whole) < 299  # illiquid: the window holds fewer candles than buckets
    assert limited == {n: whole[:n] for n in (1, 10, 299, 350)}
    assert over.body == TOO_MANY  # limit does not widen the window


@pytest.mark.parametrize(
    ("max_buckets", "limit"),
    [(350, "0"), (350, "351"), (300, "301"), (350, "-5"), (350, "ten"), (350, "")],
)
async def test_limit_out_of_range_is_400(session, max_buckets: int, limit: str):
    async with serving(max_buckets=max_buckets) as emu:
        reply = await fetch(session, emu, params=window("ONE_HOUR", 10) | {"limit": limit})
        top = await fetch(session, emu, params=window("ONE_HOUR", 10) | {"limit": str(max_buckets)})
    expected = f"limit argument is invalid - expected a number of candles from 1 to {max_buckets}"
    assert reply.status == 400
    assert reply.body == invalid(expected)
    assert top.status == 200


@pytest.mark.parametrize(("four_hour", "max_buckets"), [(True, 350), (False, 300)])
async def test_stats_and_products_name_the_regime(session, four_hour: bool, max_buckets: int):
    async with serving(four_hour=four_hour, max_buckets=max_buckets) as emu:
        async with session.get(f"{emu.url}/_emulator/stats") as r:
            stats = await r.json()
        async with session.get(f"{emu.url}/_emulator/products") as r:
            products = await r.json()
    assert stats["api"] == products["api"] == {"four_hour": four_hour, "max_buckets": max_buckets}


async def test_emulator_regime_fixture_serves_each_regime(emulator_regime: Emulator, session):
    four_hour, most = emulator_regime.config.four_hour, emulator_regime.config.max_buckets
    four = await fetch(session, emulator_regime, params=window("FOUR_HOUR", 3))
    ok = await fetch(session, emulator_regime, params=window("ONE_MINUTE", most))
    over = await fetch(session, emulator_regime, params=window("ONE_MINUTE", most + 1))
    async with session.get(f"{emulator_regime.url}/_emulator/stats") as r:
        api = (await r.json())["api"]
    assert four.status == (200 if four_hour else 400)
    assert (ok.status, over.status) == (200, 400)
    assert over.body == too_many(most)
    assert api == {"four_hour": four_hour, "max_buckets": most}


@pytest.mark.parametrize("emulator_regime", [(True, 300)], indirect=True)
async def test_emulator_regime_fixture_takes_any_regime(emulator_regime: Emulator):
    assert emulator_regime.config.api() == {"four_hour": True, "max_buckets": 300}


async def paged(
    session: aiohttp.ClientSession, emu: Emulator, product: str, granularity: str, lo: int, hi: int
) -> list[Candle]:
    """Every candle starting in ``[lo, hi)`` over HTTP, pages of ``max_buckets``, oldest first."""
    tf = SERVED[granularity]
    span = emu.config.max_buckets * tf.seconds
    candles: list[Candle] = []
    for a in range(lo, hi, span):
        query = {"start": str(a), "end": str(min(hi, a + span)), "granularity": granularity}
        reply = await fetch(session, emu, product, query)
        assert reply.status == 200, reply.body
        candles += [parse_candle(c, tf) for c in reply.body["candles"]]
    return sorted(candles)


SOURCES = [
    ("THIRTY_MINUTE", "FIFTEEN_MINUTE"),
    ("TWO_HOUR", "ONE_HOUR"),
    ("FOUR_HOUR", "ONE_HOUR"),
    ("FOUR_HOUR", "TWO_HOUR"),
    ("FOUR_HOUR", "FIVE_MINUTE"),
    ("SIX_HOUR", "ONE_HOUR"),
    ("SIX_HOUR", "TWO_HOUR"),
]


@pytest.mark.parametrize("product", ["SOL-USD", "ICP-USD", "ETH-USD", "XTZ-USD"])
@pytest.mark.parametrize(("target", "source"), SOURCES, ids=[f"{t}-from-{s}" for t, s in SOURCES])
async def test_coarse_candles_equal_the_aggregate_of_finer_served_ones(
    session, product: str, target: str, source: str
):
    g = SERVED[target].seconds
    hi = int(ANCHOR // g * g) + g  # ends with the open bucket, compared too
    lo = hi - 48 * g
    async with serving(four_hour=True, max_buckets=300) as emu:
        native = await paged(session, emu, product, target, lo, hi)
        finer = await paged(session, emu, product, source, lo, hi)
    assert native[-1].timestamp == (hi - g) * 1000
    assert_aggregates(native, finer, target, lo, hi)


# --- authentication -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ec", "ed25519"])
async def test_private_endpoint_accepts_valid_jwt(session, kind: str):
    key = make_test_key(kind)  # type: ignore[arg-type]
    async with serving(keys={key.name: key.public_key}) as emu:
        reply = await fetch(session, emu, path=PRIVATE, headers=sign(key, uri_for(emu)))
        assert reply.status == 200
        assert reply.body["candles"] == emu.candles("BTC-USD", **_ints(window("ONE_HOUR", 10)))
        assert emu.stats.by_client == {key.name: 1}


def _ints(params: dict[str, str]) -> dict[str, Any]:
    return {"granularity": params["granularity"], "start": int(params["start"]),
            "end": int(params["end"])}  # fmt: skip


REJECTIONS = {
    "missing": lambda key, other, uri: {},
    "not-bearer": lambda key, other, uri: {"Authorization": "Basic abc"},
    "wrong-uri": lambda key, other, uri: sign(key, uri.replace("BTC-USD", "ETH-USD")),
    "uri-with-query": lambda key, other, uri: sign(key, uri + "?granularity=ONE_HOUR"),
    "expired": lambda key, other, uri: sign(key, uri, ANCHOR - 200),
    "not-yet-valid": lambda key, other, uri: sign(key, uri, nbf_offset=30),
    "too-long-lived": lambda key, other, uri: sign(key, uri, lifetime=600),
    "wrong-key": lambda key, other, uri: sign(other, uri, kid=key.name),
    "unknown-kid": lambda key, other, uri: sign(other, uri),
    "wrong-iss": lambda key, other, uri: sign(key, uri, iss="coinbase"),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
async def test_private_endpoint_rejects_bad_tokens(session, case: str):
    key, other = make_test_key("ec"), make_test_key("ed25519")
    async with serving(keys={key.name: key.public_key}) as emu:
        headers = REJECTIONS[case](key, other, uri_for(emu))
        reply = await fetch(session, emu, path=PRIVATE, headers=headers)
    assert reply.status == 401
    assert reply.body["error"] == "UNAUTHORIZED"
    assert reply.body["message"] == "Unauthorized"
    token = headers.get("Authorization", "").removeprefix("Bearer ")
    assert not token or token not in json.dumps(reply.body)


async def test_public_endpoint_needs_no_token(emu: Emulator, session):
    assert (await fetch(session, emu, path=PUBLIC)).status == 200


@pytest.mark.parametrize("kind", ["ec", "ed25519"])
def test_key_file_round_trip(tmp_path: Path, kind: str):
    key = make_test_key(kind)  # type: ignore[arg-type]
    path = write_key_file(tmp_path / "cdp_api_key.json", key)
    loaded = load_public_keys(path)
    assert json.loads(path.read_text()) == {"name": key.name, "privateKey": key.secret}
    assert path.stat().st_mode & 0o777 == 0o600
    assert list(loaded) == [key.name]
    assert loaded[key.name] == key.public_key


def test_test_keys_have_coinbase_formats():
    ec_key, ed_key = make_test_key("ec"), make_test_key("ed25519", name="organizations/o/apiKeys/k")
    raw = base64.b64decode(ed_key.secret)
    assert ec_key.secret.startswith("-----BEGIN EC PRIVATE KEY-----\n")
    assert ec_key.name.startswith("organizations/") and "/apiKeys/" in ec_key.name
    assert ed_key.name == "organizations/o/apiKeys/k"
    assert len(raw) == 64
    assert isinstance(ed_key.public_key, ed25519.Ed25519PublicKey)
    assert raw[32:] == ed_key.public_key.public_bytes_raw()


# --- rate limits ----------------------------------------------------------------------


async def test_private_limit_is_per_key_and_counts_rejected_requests(session):
    clock = FakeClock()
    a, b = make_test_key("ec"), make_test_key("ed25519")
    keys = {a.name: a.public_key, b.name: b.public_key}
    async with serving(clock=clock, keys=keys, rate_limit_private=3) as emu:

        async def status(key: TestKey) -> Reply:
            return await fetch(
                session, emu, path=PRIVATE, headers=sign(key, uri_for(emu), clock.now)
            )

        first = [(await status(a)).status for _ in range(4)]
        limited = await status(a)
        other_key = await status(b)
        public = await fetch(session, emu)
        clock.now += 0.5
        hammering = [(await status(a)).status for _ in range(3)]
        clock.now += 0.8  # the accepted three have left the window, the rejected have not
        still_out = (await status(a)).status
        clock.now += 0.6
        back_in = (await status(a)).status
    assert first == [200, 200, 200, 429]
    assert limited.status == 429
    assert limited.headers["Retry-After"] == "1"
    assert limited.body == {"error": "RATE_LIMIT_EXCEEDED", "message": "Too many requests"}
    assert (other_key.status, public.status) == (200, 200)
    assert hammering == [429, 429, 429]
    assert (still_out, back_in) == (429, 200)


async def test_public_limit_is_per_ip(session):
    clock = FakeClock()
    other_ip = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with (
        serving(clock=clock, rate_limit_public=2, retry_after_s=0.5) as emu,
        aiohttp.ClientSession(connector=other_ip) as elsewhere,
    ):
        mine = [(await fetch(session, emu)).status for _ in range(3)]
        limited = await fetch(session, emu)
        theirs = (await fetch(elsewhere, emu)).status
        clock.now += 1.01
        later = (await fetch(session, emu)).status
        peaks = dict(emu.stats.peak_1s_by_client)
    assert mine == [200, 200, 429]
    assert limited.headers["Retry-After"] == "0.5"
    assert theirs == 200
    assert later == 200
    assert peaks == {"127.0.0.1": 4, "127.0.0.2": 1}


# --- faults ---------------------------------------------------------------------------


async def test_error_faults_are_5xx(session):
    async with serving(error_rate=1.0) as emu:
        replies = [await fetch(session, emu) for _ in range(12)]
        faults = emu.stats.by_fault
    assert {r.status for r in replies} == {500, 502, 503}
    assert faults == {"error": 12}


async def test_timeout_fault_stalls_until_the_client_gives_up(session):
    async with serving(timeout_rate=1.0, stall_s=30) as emu:
        started = time.perf_counter()
        with pytest.raises(asyncio.TimeoutError):
            await fetch(session, emu, client_timeout_s=0.3)
        assert emu.stats.by_fault == {"timeout": 1}
    assert time.perf_counter() - started < 5  # stop() woke the stalled handler


def malformed_kind(body: Any) -> str:
    if isinstance(body, str):
        return "truncated"
    if "candles" not in body:
        return "shape"
    for candle in body["candles"]:
        with contextlib.suppress(ValueError):
            [float(v) for v in candle.values()]
            continue
        return "value"
    return "valid"


async def test_malformed_faults_mix_truncated_wrong_shape_and_bad_values(session):
    async with serving(malformed_rate=1.0) as emu:
        replies = [await fetch(session, emu) for _ in range(12)]
    assert {r.status for r in replies} == {200}
    assert {malformed_kind(r.body) for r in replies} == {"truncated", "shape", "value"}


async def test_latency_is_added(session):
    async with serving(latency_ms=120) as emu:
        started = time.perf_counter()
        reply = await fetch(session, emu)
    assert reply.status == 200
    assert time.perf_counter() - started >= 0.12


async def test_faults_are_deterministic_for_a_seed(session):
    async def statuses(seed: int) -> list[int]:
        async with serving(seed=seed, error_rate=0.3, malformed_rate=0.3) as emu:
            return [(await fetch(session, emu)).status for _ in range(16)]

    first, again, other = await statuses(7), await statuses(7), await statuses(8)
    assert first == again
    assert first != other
    assert 200 in first and any(s >= 500 for s in first)


# --- statistics -----------------------------------------------------------------------


async def test_stats_count_statuses_endpoints_series_and_peak(session):
    clock = FakeClock()
    async with serving(clock=clock, rate_limit_public=3) as emu:
        for product in ("BTC-USD", "BTC-USD", "NOPE-USD", "ETH-USD"):
            await fetch(session, emu, product)
        clock.now += 2
        await fetch(session, emu, "ETH-USD", window("ONE_DAY", 5))
        stats = emu.stats
        async with session.get(f"{emu.url}/_emulator/stats") as r:
            over_http = await r.json()
        async with session.post(f"{emu.url}/_emulator/reset") as r:
            assert r.status == 200
        after_reset = emu.stats.total
    assert stats.total == 5
    assert stats.by_status == {200: 3, 404: 1, 429: 1}
    assert stats.rate_limited == 1
    assert stats.by_endpoint == {"public": 5}
    assert stats.by_series[("BTC-USD", "ONE_HOUR")] == 2
    assert stats.by_series[("ETH-USD", "ONE_DAY")] == 1
    assert stats.peak_1s == 4
    assert stats.timestamps == [ANCHOR] * 4 + [ANCHOR + 2]
    assert over_http == stats.as_dict() | {"api": {"four_hour": True, "max_buckets": 350}}
    assert over_http["by_status"] == {"200": 3, "404": 1, "429": 1}
    assert after_reset == 0


# --- synthetic products and extended history ------------------------------------------


async def test_synthetic_products_are_deterministic_and_valid(session):
    params = window("ONE_HOUR", 300)
    async with serving(seed=1) as one, serving(seed=1) as same, serving(seed=2) as other:
        a = (await fetch(session, one, "SOL-USD", params)).body["candles"]
        b = (await fetch(session, same, "SOL-USD", params)).body["candles"]
        c = (await fetch(session, other, "SOL-USD", params)).body["candles"]
        syn = (await fetch(session, one, "SYN417-USD", params)).body["candles"]
    tf = GRANULARITIES["ONE_HOUR"]
    assert a == b
    assert a != c
    assert len(a) == len(syn) == 300
    for candle in a + syn:
        _, o, h, lo, cl, v = parse_candle(candle, tf)  # validates grid, positivity and range
        assert h >= max(o, cl) and lo <= min(o, cl) and lo > 0 and v > 0


async def test_synthetic_windows_agree_however_they_are_asked(emu: Emulator):
    g = 300
    end = int(ANCHOR // g * g) - 5000 * g
    whole = emu.candles("ADA-USD", "FIVE_MINUTE", end - 350 * g, end)
    halves = emu.candles("ADA-USD", "FIVE_MINUTE", end - 100 * g, end) + emu.candles(
        "ADA-USD", "FIVE_MINUTE", end - 350 * g, end - 100 * g
    )
    assert whole == halves
    assert all(whole[i]["open"] == whole[i + 1]["close"] for i in range(len(whole) - 1))


async def test_illiquid_synthetic_product_omits_about_30_percent(emu: Emulator, session):
    gappy = await fetch(session, emu, "ICP-USD", window("ONE_HOUR", 300))
    liquid = await fetch(session, emu, "SOL-USD", window("ONE_HOUR", 300))
    gappy_5m = await fetch(session, emu, "ICP-USD", window("FIVE_MINUTE", 300))
    assert 150 < len(gappy.body["candles"]) < 260
    assert len(liquid.body["candles"]) == 300
    assert 90 < len(gappy_5m.body["candles"]) < 210  # quiet hours, and gaps inside traded ones


def test_synthetic_open_candle_grows_then_closes():
    clock = FakeClock()
    emu = Emulator(config(clock=clock))
    bucket = int(ANCHOR // 3600 * 3600)

    def newest() -> dict[str, str]:
        return emu.candles("LINK-USD", "ONE_HOUR", bucket, bucket + 3600)[0]

    clock.now = bucket + 360
    early = newest()
    clock.now = bucket + 3000
    late = newest()
    clock.now = bucket + 3600 + 5
    closed = newest()
    assert early["open"] == late["open"] == closed["open"]
    assert float(early["volume"]) < float(late["volume"]) < float(closed["volume"])
    assert emu.candles("LINK-USD", "ONE_HOUR", bucket + 3600, bucket + 7200) != []
    assert emu.candles("LINK-USD", "ONE_HOUR", bucket + 7200, bucket + 10800) == []


def test_synthetic_history_stops_history_days_back():
    emu = Emulator(config(history_days=10))
    day = int(ANCHOR // 86400 * 86400)
    candles = emu.candles("DOT-USD", "ONE_DAY", day - 300 * 86400, day + 86400)
    assert 10 <= len(candles) <= 11
    assert int(candles[-1]["start"]) >= ANCHOR - 10 * 86400 - 86400


async def test_extend_history_reaches_300_daily_candles(session):
    params = window("ONE_DAY", 300)
    async with serving() as plain, serving(extend_history=True) as extended:
        short = (await fetch(session, plain, "BTC-USD", params)).body["candles"]
        long = (await fetch(session, extended, "BTC-USD", params)).body["candles"]
        info = {p["product"]: p for p in extended.describe()["products"]}
        async with session.get(f"{extended.url}/_emulator/products") as r:
            listing = await r.json()
    btc = info["BTC-USD"]
    midnight = epoch(btc["synthetic_before"])
    synthetic = next(i for i, c in enumerate(long) if int(c["start"]) < midnight)
    assert len(short) < 40
    assert len(long) >= 300
    assert midnight % 86400 == 0
    assert int(short[-1]["start"]) <= midnight <= int(short[-1]["start"]) + 86400
    assert long[:synthetic] == [c for c in short if int(c["start"]) >= midnight]  # recorded kept
    assert long[synthetic - 1]["start"] == str(midnight)
    walk_end, data_start = long[synthetic]["close"], long[synthetic - 1]["open"]
    assert walk_end == data_start  # the walk ends where the recorded data starts
    assert btc["source"] == "recorded"
    assert btc["synthetic_before"] == btc["recorded_from"]  # BTC-USD traded in that minute
    assert "SYNTHETIC" in btc["label"]
    assert listing == extended.describe()
    assert info["ICP-USD"]["illiquid"] and info["SOL-USD"]["source"] == "synthetic"


def epoch(text: str) -> int:
    return int(pd.Timestamp(text).timestamp())


@pytest.mark.parametrize("granularity", list(SERVED))
def test_extended_history_switches_to_recorded_at_midnight(granularity: str):
    extended, plain = Emulator(config(extend_history=True)), Emulator(config())
    g = SERVED[granularity].seconds
    info = {p["product"]: p for p in extended.describe()["products"]}
    for product in ("BTC-USD", "XTZ-USD"):
        midnight = epoch(info[product]["synthetic_before"])
        around = extended.candles(product, granularity, midnight - 5 * g, midnight + 5 * g)
        recorded = [c for c in around if int(c["start"]) >= midnight]
        assert recorded == plain.candles(product, granularity, midnight, midnight + 5 * g)
        assert len(recorded) < len(around)
        first = int(recorded[-1]["start"])  # newest first: the oldest recorded bucket is last
        assert first <= epoch(info[product]["recorded_from"]) < first + g
        if product == "BTC-USD":  # liquid: the last synthetic close is the first recorded open
            assert around[len(recorded)]["close"] == around[len(recorded) - 1]["open"]


# --- synthetic granularities are aggregates of the 5-minute walk ----------------------

COARSE = [g for g in SERVED if SERVED[g].seconds > 300]


def five_minute_candles(emu: Emulator, product: str, lo: int, hi: int) -> list[Candle]:
    """The emulator's own FIVE_MINUTE candles starting in ``[lo, hi)``, oldest first."""
    tf, page = GRANULARITIES["FIVE_MINUTE"], 300 * 300
    return sorted(
        parse_candle(c, tf)
        for a in range(lo, hi, page)
        for c in emu.candles(product, "FIVE_MINUTE", a, min(hi, a + page))
    )


def served(emu: Emulator, product: str, granularity: str, lo: int, hi: int) -> list[Candle]:
    tf = SERVED[granularity]
    return sorted(parse_candle(c, tf) for c in emu.candles(product, granularity, lo, hi))


def assert_aggregates(
    native: list[Candle], fives: list[Candle], granularity: str, lo: int, hi: int
):
    """``native`` is exactly the aggregation of ``fives`` over ``[lo, hi)`` (the oracle)."""
    tf = SERVED[granularity]
    expected = aggregate_candles(fives, tf, lo * 1000, hi * 1000)
    assert [c[:5] for c in native] == [c[:5] for c in expected]
    want = [round(c.volume, 8) for c in expected]  # Coinbase reports 8 decimals
    assert [c.volume for c in native] == pytest.approx(want, rel=1e-12)


CASES = {
    "liquid": ("SOL-USD", False, "recent"),
    "cheap": ("SHIB-USD", False, "recent"),
    "illiquid": ("ICP-USD", False, "recent"),
    "btc-synthetic": ("BTC-USD", True, "synthetic"),
    "btc-midnight": ("BTC-USD", True, "midnight"),
    "xtz-synthetic": ("XTZ-USD", True, "synthetic"),
    "xtz-midnight": ("XTZ-USD", True, "midnight"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_closed_synthetic_candles_are_aggregates_of_five_minute_ones(case: str):
    product, extend, where = CASES[case]
    emu = Emulator(config(extend_history=extend))
    info = {p["product"]: p for p in emu.describe()["products"]}[product]
    for granularity in COARSE:
        g = SERVED[granularity].seconds
        if where == "recent":
            hi = int(ANCHOR // g * g)  # the newest closed bucket is the last one
            lo = hi - 24 * g
        else:
            midnight = epoch(info["synthetic_before"])
            lo = midnight - (40 * 86400 if where == "synthetic" else 12 * g)
            hi = lo + 24 * g
        native = served(emu, product, granularity, lo, hi)
        assert native, granularity
        assert_aggregates(native, five_minute_candles(emu, product, lo, hi), granularity, lo, hi)


@pytest.mark.parametrize("product", ["SOL-USD", "ICP-USD"])
def test_open_candle_is_the_aggregate_of_the_opened_five_minute_bars(product: str):
    clock = FakeClock()
    emu = Emulator(config(clock=clock))
    day = int(ANCHOR // 86400 * 86400)
    for now in (ANCHOR, day + 86400 + 7.5, day + 86400 + 3 * 3600 + 1234.5, day + 2 * 86400 - 0.25):
        clock.now = now
        for granularity in ("ONE_HOUR", "FOUR_HOUR", "ONE_DAY"):
            g = SERVED[granularity].seconds
            lo, hi = int(now // g * g) - 2 * g, int(now // g * g) + g  # two closed, the open one
            native = served(emu, product, granularity, lo, hi)
            fives = five_minute_candles(emu, product, lo, int(now) + 1)
            assert_aggregates(native, fives, granularity, lo, hi)
            assert int(fives[-1].timestamp) // 1000 <= now


@pytest.mark.parametrize("granularity", ["ONE_HOUR", "FOUR_HOUR", "SIX_HOUR", "ONE_DAY"])
def test_aggregated_windows_agree_however_they_are_asked(granularity: str):
    g = SERVED[granularity].seconds
    end = int(ANCHOR // g * g) + g
    whole = Emulator(config()).candles("ICP-USD", granularity, end - 300 * g, end)
    emu = Emulator(config())
    pieces = [(100, 40), (300, 250), (260, 90), (45, 0)]  # overlapping, out of order
    for a, b in pieces:
        got = emu.candles("ICP-USD", granularity, end - a * g, end - b * g)
        assert got == [c for c in whole if end - a * g <= int(c["start"]) < end - b * g]
    assert emu.candles("ICP-USD", granularity, end - 300 * g, end) == whole


def test_block_cache_is_bounded_and_least_recently_used():
    def bars() -> Bars:
        return Bars(np.arange(10), *(np.ones(10) for _ in range(5)))

    cache = BlockCache(max_bytes=3 * (ENTRY_BYTES + 6 * 8 * 10))
    for key in "abc":
        cache.put(key, 0, 10, bars())
    assert cache.get("a") is not None  # now the most recently used
    cache.put("d", 0, 10, bars())
    assert cache.get("b") is None
    assert all(cache.get(key) is not None for key in "acd")
    assert cache.bytes <= cache.max_bytes


def test_products_lists_recorded_then_synthetic():
    products = Emulator(config()).products()
    assert products[:4] == ["BTC-USD", "DOGE-USD", "ETH-USD", "XTZ-USD"]
    assert len(products) == 25
    assert "ICP-USD" in products


# --- lifecycle ------------------------------------------------------------------------


async def test_stop_closes_every_socket(session):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emu = Emulator(config())
        await emu.start()
        assert (await fetch(session, emu)).status == 200
        await emu.stop()
        with pytest.raises(aiohttp.ClientConnectionError):
            await fetch(session, emu)
        del emu
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_emulator_thread_serves_sync_code():
    with EmulatorThread(config()) as running:
        query = "?start=1735696800&end=1735700400&granularity=ONE_HOUR"
        with urllib.request.urlopen(running.url + PUBLIC.format("BTC-USD") + query) as r:
            body = json.load(r)
        total = running.emulator.stats.total
    assert [c["start"] for c in body["candles"]] == ["1735696800"]
    assert total == 1
    with pytest.raises(OSError):
        urllib.request.urlopen(running.url + PUBLIC.format("BTC-USD") + query, timeout=2)


@contextlib.contextmanager
def banner_and_url(code: str) -> Iterator[tuple[str, str]]:
    """Run ``python -c code`` (an emulator), yield its banner and URL; SIGTERM must stop it."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        yield line, line.split(" on ", 1)[1].split()[0]
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_serve_prints_url_and_stops_on_sigterm():
    code = (
        "from livermore_nb.emulator import EmulatorConfig, serve; "
        "serve(EmulatorConfig(), '127.0.0.1', 0)"
    )
    with banner_and_url(code) as (banner, url):
        query = f"?start={math.floor(time.time()) - 3600}&end={math.floor(time.time())}"
        with urllib.request.urlopen(f"{url}{PUBLIC.format('ETH-USD')}{query}&granularity=ONE_HOUR"):
            pass
    assert "FOUR_HOUR served, at most 350 buckets per request" in banner


def test_emulator_command_serves_the_regime_it_is_given():
    argv = ["emulator", "--port", "0", "--no-four-hour", "--max-buckets", "300"]
    code = f"import sys; from livermore_nb.cli import main; sys.exit(main({argv!r}))"
    with (
        banner_and_url(code) as (banner, url),
        urllib.request.urlopen(f"{url}/_emulator/stats") as r,
    ):
        api = json.load(r)["api"]
    assert "no FOUR_HOUR, at most 300 buckets per request" in banner
    assert api == {"four_hour": False, "max_buckets": 300}


def test_emulator_help_lists_the_regime_options_with_defaults(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        main(["emulator", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exited.value.code == 0
    assert "--four-hour, --no-four-hour" in text
    assert "default: --four-hour" in text
    assert "--max-buckets N" in text
    assert "default: 350" in text
