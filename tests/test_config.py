"""``--config livermore.toml``: every backfill option from a file, flags on top, no secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from livermore_nb.cli import apply_config_file, build_parser, config_from_args, main
from livermore_nb.config import backfill_options, load_config, read_config
from livermore_nb.emulator import EmulatorConfig, EmulatorThread, TestKey
from livermore_nb.errors import ConfigError

FULL = """
symbols = ["btc-usd", "ETH-USD"]
timeframes = ["5m", "1h"]
candles = 200
min_candles = 120
rate = 5
concurrency = 4
api_url = "http://127.0.0.1:9"
key_template = "c:{exchange_id}:{symbol}:{timeframe}"
user_id = 7
exchange_id = 3
keep = 500
ttl = 0
include_open = true
full = true
page_size = 100
timeout = 2.5
log_format = "json"
"""


def write(tmp_path: Path, text: str, name: str = "livermore.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def parsed(argv: list[str]):
    return apply_config_file(build_parser().parse_args(argv), argv)


def test_every_option_from_the_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    assert config.symbols == ("BTC-USD", "ETH-USD") and config.timeframes == ("5m", "1h")
    assert (config.candles, config.min_candles, config.rate, config.concurrency) == (200, 120, 5, 4)
    assert (config.api_url, config.user_id, config.exchange_id) == ("http://127.0.0.1:9", 7, 3)
    assert config.key_template == "c:{exchange_id}:{symbol}:{timeframe}"
    assert (config.keep, config.ttl, config.page_size, config.timeout_s) == (500, 0, 100, 2.5)
    assert config.include_open and config.full


def test_the_schema_is_every_backfill_flag() -> None:
    flags = {a.option_strings[0][2:].replace("-", "_") for a in backfill_options().values()}
    assert flags == set(backfill_options())
    assert {"symbols", "symbols_file", "min_candles", "timeout", "report"} <= flags
    assert "config" not in flags


def test_flags_and_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    args = parsed(["backfill", "--config", str(path), "--candles", "300", "--symbols", "SOL-USD"])
    config = config_from_args(args)
    assert (config.candles, config.min_candles, config.symbols) == (300, 120, ("SOL-USD",))
    assert args.log_format == "json"
    notebook = load_config(path, candles=250, rate=None, symbols="ADA-USD")
    assert (notebook.candles, notebook.rate, notebook.symbols) == (250, 5, ("ADA-USD",))
    assert load_config(None, symbols=["BTC-USD"]).candles == 300  # no file: the defaults


def test_a_relative_symbols_file_is_read_beside_the_config(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "symbols.txt").write_text("BTC-USD\n# comment\nETH-USD\n")
    path = write(tmp_path / "conf", 'symbols_file = "symbols.txt"\n')
    assert load_config(path).symbols == ("BTC-USD", "ETH-USD")
    args = parsed(["backfill", "--config", str(path), "--symbols", "XTZ-USD"])
    assert config_from_args(args).symbols == ("XTZ-USD",)  # the flag replaces the file's list


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("min-candles = 10\n", "'min-candles' (did you mean 'min_candles'?)"),
        ("candels = 10\nfoo = 1\n", "'candels' (did you mean 'candles'?), 'foo'"),
        ('candles = "300"\n', "candles in"),
        ("candles = 3.5\n", "must be an integer"),
        ('include_open = "yes"\n', "must be true or false"),
        ('log_format = "xml"\n', "one of 'text', 'json'"),
        ("symbols = [1, 2]\n", "must be a string"),
        ('symbols = "A-USD"\nsymbols_file = "s.txt"\n', "both symbols and symbols_file"),
        ("candles = \n", "not valid TOML"),
    ],
)
def test_bad_files_are_config_errors_naming_the_key(tmp_path: Path, text: str, message: str):
    with pytest.raises(ConfigError) as info:
        read_config(write(tmp_path, text))
    assert message in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        'private_key = "-----BEGIN EC PRIVATE KEY-----hunter2"\n',
        'password = "hunter2"\n',
        'coinbase_api_key_name = "organizations/hunter2"\n',
        'redis_url = "redis://:hunter2@redis.internal:6379/0"\n',
        'redis_url = "redis://redis.internal/0?password=hunter2"\n',
    ],
)
def test_secrets_are_refused_and_never_echoed(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        read_config(write(tmp_path, text))
    assert "environment" in str(info.value) and "hunter2" not in str(info.value)


def test_secrets_are_refused_as_overrides_too() -> None:
    with pytest.raises(ConfigError, match="secrets"):
        load_config(None, symbols="BTC-USD", api_key="hunter2")


def test_cli_exits_2_on_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "symbols = 'BTC-USD'\ncandels = 3\n")
    assert main(["backfill", "--config", str(path)]) == 2
    assert "unknown option(s)" in capsys.readouterr().err
    assert main(["backfill", "--config", str(tmp_path / "missing.toml")]) == 2


def test_backfill_runs_from_a_config_file(
    ec_key: TestKey, redis_url: str, key_template: str, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        f'symbols = ["SOL-USD"]\ntimeframes = "1h"\nmin_candles = 100\n'
        f'key_template = "{key_template}"\nreport = "{tmp_path / "report.json"}"\n',
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("COINBASE_")}
    with EmulatorThread(EmulatorConfig(keys={ec_key.name: ec_key.public_key})) as emu:
        env |= {"COINBASE_API_URL": emu.url, "COINBASE_API_KEY_NAME": ec_key.name}
        env["COINBASE_API_PRIVATE_KEY"] = ec_key.secret
        argv = ["backfill", "--config", str(path), "--redis-url", redis_url, "--candles", "120"]
        result = subprocess.run(
            [sys.executable, "-m", "livermore_nb", *argv],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (series,) = json.loads((tmp_path / "report.json").read_text())["series"]
    assert (series["symbol"], series["timeframe"], series["candles"]) == ("SOL-USD", "1h", 120)


def test_an_option_with_a_converter_gets_the_file_value_converted(tmp_path: Path) -> None:
    import argparse

    from livermore_nb.config import _checked

    action = argparse.ArgumentParser().add_argument("--ratio", type=lambda v: float(v) / 100)
    assert _checked("ratio", 50, action, "f.toml") == "50"  # argparse converts text defaults
    with pytest.raises(ConfigError, match=r"ratio in f\.toml must be a value"):
        _checked("ratio", True, action, "f.toml")
