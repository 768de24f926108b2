"""Bad input gets one clear line and DESIGN.md's exit code, no traceback, nothing written.

The CLI runs in-process (``main``) where that is enough and as a subprocess
where a traceback could only show there; invalid candles come from a real
local HTTP server that answers with crafted bodies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from aiohttp import web
from conftest import serve
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from livermore_nb.backfill import BackfillConfig, backfill
from livermore_nb.cli import main
from livermore_nb.emulator import EmulatorConfig, EmulatorThread, TestKey
from livermore_nb.errors import EXIT_AUTH, EXIT_NOT_READY, EXIT_REDIS, EXIT_USAGE
from livermore_nb.ratelimit import RetryPolicy
from livermore_nb.store import redact_url

PASSWORD = "s3cretpass"


def _pem(key: object) -> str:
    """A private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, redis_url: str, key_template: str) -> list[str]:
    """A clean environment on the test Redis; yields the common CLI arguments."""
    for name in list(os.environ):
        if name.startswith(("COINBASE_", "REDIS_URL")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("COINBASE_API_URL", "http://127.0.0.1:9")  # nothing listens there
    return ["backfill", "--key-template", key_template, "--timeout", "1"]


def _namespace_keys(client: redis.Redis, template: str) -> list[bytes]:
    """Keys of this test's namespace."""
    return list(client.scan_iter(match=template.split(":candles")[0] + ":*"))


def _assert_one_line_error(err: str, code: int, expected: int, needle: str) -> None:
    """Exit ``expected``, a single ``livermore-nb: error:`` line naming ``needle``."""
    assert code == expected, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("livermore-nb: error: "), err
    assert needle in lines[0] and "Traceback" not in err


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--symbols", "BTC_USD"], "malformed symbol 'BTC_USD'"),
        (["--symbols", "BTC-USD,../etc"], "malformed symbol"),
        (["--symbols", "BTC-USD", "--timeframes", "3h"], "unknown timeframe '3h'"),
        (["--symbols", "BTC-USD", "--candles", "0"], "--candles must be at least 1"),
        (["--symbols", "BTC-USD", "--candles", "-5"], "--candles must be at least 1"),
        (["--symbols", "BTC-USD", "--candles", "100", "--min-candles", "101"], "cannot exceed"),
        (["--symbols", "BTC-USD", "--redis-url", "foo://x"], "invalid Redis URL"),
        (["--symbols", "BTC-USD", "--redis-url", "redis://localhost:port/0"], "invalid Redis URL"),
        (["--symbols", "BTC-USD", "--redis-url", "redis://localhost:6379/abc"], "database 'abc'"),
        ([], "give --symbols or --symbols-file"),
    ],
)
def test_bad_options_exit_2_with_one_line_and_write_nothing(
    cli_env: list[str],
    extra: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
    sync_redis: redis.Redis,
    key_template: str,
) -> None:
    code = main([*cli_env, *extra])
    out, err = capsys.readouterr()
    _assert_one_line_error(err, code, EXIT_USAGE, needle)
    assert out == ""
    assert _namespace_keys(sync_redis, key_template) == []


@pytest.mark.parametrize("content", ["", "\n# only a comment\n\n", " , ,\n"])
def test_an_empty_symbols_file_exits_2(
    cli_env: list[str], content: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "symbols.txt"
    path.write_text(content)
    code = main([*cli_env, "--symbols-file", str(path)])
    _assert_one_line_error(capsys.readouterr().err, code, EXIT_USAGE, "lists no symbols")


def test_a_missing_symbols_file_exits_2(
    cli_env: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*cli_env, "--symbols-file", str(tmp_path / "nope.txt")])
    _assert_one_line_error(capsys.readouterr().err, code, EXIT_USAGE, "cannot read symbols file")


def _bad_keys() -> list[tuple[str, str, str]]:
    """(id, secret, expected message part) for keys that must be refused before any request."""
    return [
        ("garbage-pem", "-----BEGIN EC PRIVATE KEY-----\nnot base64\n-----END EC PRIVATE KEY-----",
         "not a readable PEM key"),
        ("rsa", _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
         "must be EC P-256"),
        ("p384", _pem(ec.generate_private_key(ec.SECP384R1())), "must be EC P-256"),
        ("short-base64", "c2hvcnQ=", "32 or 64 bytes"),
        ("not-a-key", "hello world", "neither a PEM nor base64"),
    ]  # fmt: skip


@pytest.mark.parametrize(("secret", "needle"), [k[1:] for k in _bad_keys()],
                         ids=[k[0] for k in _bad_keys()])  # fmt: skip
def test_a_bad_private_key_exits_2_before_any_request(
    cli_env: list[str],
    secret: str,
    needle: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    sync_redis: redis.Redis,
    key_template: str,
) -> None:
    monkeypatch.setenv("COINBASE_API_KEY_NAME", "organizations/o/apiKeys/k")
    monkeypatch.setenv("COINBASE_API_PRIVATE_KEY", secret)
    code = main([*cli_env, "--symbols", "BTC-USD"])
    err = capsys.readouterr().err
    _assert_one_line_error(err, code, EXIT_USAGE, needle)
    assert not [line for line in secret.splitlines() if "-----" not in line and line in err]
    assert _namespace_keys(sync_redis, key_template) == []


def test_a_key_name_without_a_key_exits_2(
    cli_env: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COINBASE_API_KEY_NAME", "organizations/o/apiKeys/k")
    code = main([*cli_env, "--symbols", "BTC-USD"])
    _assert_one_line_error(capsys.readouterr().err, code, EXIT_USAGE, "COINBASE_API_PRIVATE_KEY")


def test_unreachable_redis_exits_4_and_hides_the_password(
    cli_env: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:1/0"
    code = main([*cli_env, "--symbols", "BTC-USD", "--redis-url", url])
    err = capsys.readouterr().err
    _assert_one_line_error(err, code, EXIT_REDIS, "Redis unreachable")
    assert PASSWORD not in err


def test_redact_url_hides_passwords_in_userinfo_and_query() -> None:
    assert redact_url(f"redis://:{PASSWORD}@h:1/0") == "redis://:***@h:1/0"
    assert redact_url(f"redis://u:{PASSWORD}@h/0") == "redis://u:***@h/0"
    assert redact_url(f"redis://h/0?db=1&password={PASSWORD}") == "redis://h/0?db=1&password=***"
    assert redact_url("unix:///tmp/r.sock") == "unix:///tmp/r.sock"


# ---------------------------------------------------------------- against a running API


@pytest.fixture
def threaded_emulator(ec_key: TestKey) -> Iterator[EmulatorThread]:
    """An emulator whose clock runs ten minutes ahead (so every JWT looks stale)."""
    import time

    config = EmulatorConfig(keys={ec_key.name: ec_key.public_key}, clock=lambda: time.time() + 600)
    with EmulatorThread(config) as running:
        yield running


def test_a_clock_skewed_key_is_rejected_with_exit_5_and_a_clear_reason(
    cli_env: list[str],
    threaded_emulator: EmulatorThread,
    ec_key: TestKey,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    sync_redis: redis.Redis,
    key_template: str,
) -> None:
    monkeypatch.setenv("COINBASE_API_URL", threaded_emulator.url)
    monkeypatch.setenv("COINBASE_API_KEY_NAME", ec_key.name)
    monkeypatch.setenv("COINBASE_API_PRIVATE_KEY", ec_key.secret)
    code = main([*cli_env, "--symbols", "BTC-USD,ETH-USD", "--timeframes", "1h"])
    out, _ = capsys.readouterr()
    assert code == EXIT_AUTH
    assert "stopped early: Coinbase rejected the API key (HTTP 401" in out
    assert "token expired" in out and "clock" in out
    assert _namespace_keys(sync_redis, key_template) == []
    assert threaded_emulator.emulator.stats.total <= 2  # stops at the first rejection


def test_an_unknown_product_fails_its_series_only(
    cli_env: list[str],
    threaded_emulator: EmulatorThread,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    sync_redis: redis.Redis,
    key_template: str,
) -> None:
    monkeypatch.setenv("COINBASE_API_URL", threaded_emulator.url)  # public endpoint, no JWT
    report_path = tmp_path / "report.json"
    args = ["--symbols", "BTC-USD,NOPE-USD", "--timeframes", "1h,4h", "--candles", "20"]
    args += ["--min-candles", "20", "--report", str(report_path)]
    code = main([*cli_env, *args])
    assert code == EXIT_NOT_READY
    series = {
        (s["symbol"], s["timeframe"]): s for s in json.loads(report_path.read_text())["series"]
    }
    for tf in ("1h", "4h"):
        assert series[("BTC-USD", tf)]["status"] == "ready"
        assert series[("NOPE-USD", tf)]["status"] == "failed"
        assert "Product NOPE-USD not supported" in series[("NOPE-USD", tf)]["error"]
    names = {k.decode().split(":candles:")[1] for k in _namespace_keys(sync_redis, key_template)}
    assert names == {"1:1:BTC-USD:1h", "1:1:BTC-USD:4h"}
    assert threaded_emulator.emulator.stats.by_status.get(404) == 1  # not retried, asked once
    assert "Traceback" not in capsys.readouterr().err


def test_no_traceback_reaches_a_user_of_the_real_command(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COINBASE_", "REDIS_URL"))}
    cases = [
        (["--symbols", "BTC-USD", "--candles", "-1"], EXIT_USAGE),
        (["--symbols", "BTC-USD", "--redis-url", "redis://127.0.0.1:1/0"], EXIT_REDIS),
    ]
    for extra, expected in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "livermore_nb.cli", "backfill", *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        _assert_one_line_error(proc.stderr, proc.returncode, expected, "")


# ---------------------------------------------------------------- invalid candle values

H = 3600
BAD_CANDLES = {
    "TEXT-USD": {"close": "abc"},
    "NAN-USD": {"close": "NaN"},
    "INF-USD": {"high": "Infinity"},
    "NEG-USD": {"low": "-1"},
    "ZERO-USD": {"open": "0"},
    "NEGVOL-USD": {"volume": "-0.5"},
    "HILO-USD": {"high": "90", "low": "110"},
    "RANGE-USD": {"close": "130"},
    "GRID-USD": {"start": "+1800"},
    "NULL-USD": {"open": None},
    "MISSING-USD": {"volume": ...},
}


def _candle(start: int, **changes: object) -> dict[str, object]:
    """A valid API candle (strings), with ``changes`` applied (``...`` deletes a field)."""
    candle: dict[str, object] = {
        "start": str(start), "low": "95", "high": "120", "open": "100", "close": "110",
        "volume": "3.5",
    }  # fmt: skip
    for name, value in changes.items():
        if value is ...:
            del candle[name]
        elif value == "+1800":
            candle[name] = str(start + 1800)
        else:
            candle[name] = value
    return candle


@pytest.fixture
async def crafted_api() -> AsyncIterator[str]:
    """A local HTTP API answering each product with 5 hourly candles, one of them broken."""

    async def candles(request: web.Request) -> web.Response:
        product = request.match_info["product"]
        end = int(request.query["end"]) // H * H
        rows = [_candle(end - i * H) for i in range(1, 6)]
        if product in BAD_CANDLES:
            rows[2] = _candle(end - 3 * H, **BAD_CANDLES[product])
        return web.json_response({"candles": rows})

    async with serve(candles, "/api/v3/brokerage/market/products/{product}/candles") as url:
        yield url


async def test_invalid_candle_values_are_rejected_and_never_written(
    crafted_api: str, redis_url: str, key_template: str, sync_redis: redis.Redis
) -> None:
    symbols = ("GOOD-USD", *BAD_CANDLES)
    config = BackfillConfig(
        symbols=symbols,
        timeframes=("1h",),
        candles=5,
        min_candles=5,
        rate=500,
        redis_url=redis_url,
        key_template=key_template,
        retry=RetryPolicy(attempts=2, backoff_initial_s=0.01, backoff_max_s=0.01, jitter_s=0),
    )
    report = await backfill(config, env={"COINBASE_API_URL": crafted_api})
    by_symbol = {s.symbol: s for s in report.series}
    assert by_symbol["GOOD-USD"].status == "ready" and by_symbol["GOOD-USD"].candles == 5
    for symbol in BAD_CANDLES:
        assert by_symbol[symbol].status == "failed", symbol
        assert by_symbol[symbol].error, symbol
    names = {k.decode().split(":candles:")[1] for k in _namespace_keys(sync_redis, key_template)}
    assert names == {"1:1:GOOD-USD:1h"}
    assert report.requests == 1 + 2 * len(BAD_CANDLES)  # a bad page is retried, boundedly
