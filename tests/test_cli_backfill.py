"""``livermore-nb backfill`` as a user runs it: a subprocess, the emulator, a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from livermore_nb.cli import text_table
from livermore_nb.emulator import EmulatorConfig, EmulatorThread, TestKey

REPORT_KEYS = {"ready", "duration_s", "requests", "retries", "rate_limited", "series"}
SERIES_KEYS = {"symbol", "timeframe", "candles", "first", "last", "status", "error"}


@pytest.fixture
def live_emulator(ec_key: TestKey) -> Iterator[EmulatorThread]:
    with EmulatorThread(EmulatorConfig(keys={ec_key.name: ec_key.public_key})) as emu:
        yield emu


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("COINBASE_")}
    full_env.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "livermore_nb.cli", *args],
        env={**full_env, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def key_env(ec_key: TestKey, url: str) -> dict[str, str]:
    return {
        "COINBASE_API_URL": url,
        "COINBASE_API_KEY_NAME": ec_key.name,
        "COINBASE_API_PRIVATE_KEY": ec_key.secret,
    }


def test_backfill_writes_the_report_and_prints_the_table(
    live_emulator: EmulatorThread, ec_key: TestKey, redis_url, key_template, tmp_path: Path
):
    report_path = tmp_path / "report.json"
    result = run_cli(
        [
            "backfill",
            "--symbols",
            "SOL-USD,ADA-USD",
            "--timeframes",
            "5m,4h",
            "--redis-url",
            redis_url,
            "--key-template",
            key_template,
            "--report",
            str(report_path),
        ],
        key_env(ec_key, live_emulator.url),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert set(report) >= REPORT_KEYS
    assert report["ready"] is True and len(report["series"]) == 4
    assert all(set(s) >= SERIES_KEYS and s["status"] == "ready" for s in report["series"])
    assert "READY: 4 ready" in result.stdout
    assert "None" not in result.stdout and "NaN" not in result.stdout  # no error: a dash
    events = [line.split()[1] for line in result.stderr.splitlines() if "backfill_" in line]
    assert events[0] == "backfill_start" and events[-1] == "backfill_complete"
    assert "backfill_progress" in events


def test_json_log_format_emits_one_object_per_line(
    live_emulator: EmulatorThread, ec_key: TestKey, redis_url, key_template
):
    result = run_cli(
        [
            "backfill",
            "--symbols",
            "NOPE-USD,SOL-USD",
            "--timeframes",
            "1h",
            "--redis-url",
            redis_url,
            "--key-template",
            key_template,
            "--log-format",
            "json",
        ],
        key_env(ec_key, live_emulator.url),
    )
    assert result.returncode == 3
    events = [json.loads(line) for line in result.stderr.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "backfill_start" and kinds[-1] == "backfill_complete"
    progress = [e for e in events if e["event"] == "backfill_progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == 2
    assert progress[-1]["percent"] == 100.0 and progress[-1]["errors"] == 1
    report = json.loads(result.stdout)
    failed = [s for s in report["series"] if s["status"] == "failed"]
    assert [s["symbol"] for s in failed] == ["NOPE-USD"] and "not supported" in failed[0]["error"]


def test_redis_on_a_closed_port_exits_4_without_requests(
    live_emulator: EmulatorThread, ec_key: TestKey, key_template
):
    result = run_cli(
        ["backfill", "--symbols", "SOL-USD", "--redis-url", "redis://127.0.0.1:1/0"],
        key_env(ec_key, live_emulator.url),
    )
    assert result.returncode == 4
    assert result.stderr.strip().startswith("livermore-nb: error: Redis unreachable")
    assert "Traceback" not in result.stderr
    assert live_emulator.emulator.stats.total == 0


def test_a_rejected_key_says_why_on_stderr_and_exits_5(
    live_emulator: EmulatorThread, redis_url, key_template
):
    from livermore_nb.emulator import make_test_key

    stranger = make_test_key("ed25519")
    env = {
        "COINBASE_API_URL": live_emulator.url,
        "COINBASE_API_KEY_NAME": stranger.name,
        "COINBASE_API_PRIVATE_KEY": stranger.secret,
    }
    result = run_cli(
        [
            "backfill",
            "--symbols",
            "SOL-USD",
            "--redis-url",
            redis_url,
            "--key-template",
            key_template,
        ],
        env,
    )
    assert result.returncode == 5
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("livermore-nb: error: Coinbase rejected the API key")
    assert stranger.secret not in result.stderr + result.stdout


def test_a_backfill_process_never_imports_pandas() -> None:
    """Replicas start together on small machines: pandas would cost each ~0.4 s of CPU."""
    code = (
        "import sys; from livermore_nb import cli, backfill, budget, leases, progress, startup; "
        "cli.text_table([{'a': 1, 'b': None}]); "
        "print(sorted(m for m in ('pandas', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_text_table_aligns_columns_and_shows_a_dash_for_none() -> None:
    table = text_table([{"symbol": "BTC-USD", "error": None}, {"symbol": "X-Y", "error": "late"}])
    assert table.splitlines() == [" symbol error", "BTC-USD     —", "    X-Y  late"]
    assert text_table([]) == "(no series)"
