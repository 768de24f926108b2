"""The notebooks headless: papermill runs of backfill.ipynb and ``livermore-nb startup``.

The emulator runs in its own thread (EmulatorThread): papermill and subprocesses
block, which would starve an emulator on the test's event loop.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import papermill as pm
import pytest
import redis

from livermore_nb.emulator import EmulatorConfig, EmulatorThread, TestKey
from livermore_nb.startup import (
    EXIT_FAILURE,
    NOTEBOOK_PARAMETERS,
    exit_code_for,
    notebook_path,
)
from livermore_nb.store import format_key

pytestmark = pytest.mark.slow  # papermill starts a kernel per test

REPO = Path(__file__).resolve().parent.parent
MARKER = "import pathlib; pathlib.Path('marker').touch()"


@pytest.fixture(scope="module")
def coinbase_env(ec_key: TestKey) -> Iterator[dict[str, str]]:
    """Env pointing a kernel or subprocess at a threaded emulator that knows ``ec_key``."""
    config = EmulatorConfig(keys={ec_key.name: ec_key.public_key}, extend_history=True)
    with EmulatorThread(config) as emulator:
        yield {
            "COINBASE_API_URL": emulator.url,
            "COINBASE_API_KEY_NAME": ec_key.name,
            "COINBASE_API_PRIVATE_KEY": ec_key.secret,
        }


@pytest.fixture
def kernel_env(monkeypatch: pytest.MonkeyPatch, coinbase_env: dict[str, str]) -> None:
    """Point the kernels papermill starts in this test at the emulator (they inherit the env)."""
    for name, value in coinbase_env.items():
        monkeypatch.setenv(name, value)


def run_notebook(tmp_path: Path, **parameters: object) -> Path:
    """Execute backfill.ipynb with ``parameters`` into tmp_path; the executed notebook's path."""
    out = tmp_path / "executed.ipynb"
    pm.execute_notebook(
        str(notebook_path()),
        str(out),
        parameters={"use_emulator": False, "timeframes": "1h,4h", **parameters},
        kernel_name="python3",
        progress_bar=False,
        cwd=str(tmp_path),
    )
    return out


def startup(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``livermore-nb startup ARGS`` in tmp_path with ``env`` added."""
    return subprocess.run(
        [sys.executable, "-m", "livermore_nb.cli", "startup", *args],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def cell_outputs(path: Path, needle: str) -> list[dict[str, Any]]:
    """Saved outputs of the executed notebook's one code cell whose source holds ``needle``."""
    cells = json.loads(path.read_text())["cells"]
    (cell,) = [c for c in cells if c["cell_type"] == "code" and needle in "".join(c["source"])]
    return [
        {k: "".join(v) if isinstance(v, list) else v for k, v in out.items()}
        | ({"data": {m: "".join(t) for m, t in out["data"].items()}} if "data" in out else {})
        for out in cell["outputs"]
    ]


def assert_no_secret(path: Path, key: TestKey) -> None:
    """Neither the key nor any line of its PEM body appears anywhere in the file."""
    text = path.read_text()
    pem_lines = [line for line in key.secret.splitlines() if len(line) > 16 and "-----" not in line]
    assert pem_lines and not any(line in text for line in pem_lines)
    assert "PRIVATE KEY" not in text and key.secret not in text


def test_notebook_parameters_match_startup() -> None:
    names = set(pm.inspect_notebook(str(notebook_path())))
    extra = {"config_file", "redis_url", "report_path", "use_emulator"}
    assert set(NOTEBOOK_PARAMETERS) | extra == names
    assert notebook_path().resolve() == (REPO / "notebooks" / "backfill.ipynb").resolve()


def test_committed_notebooks_carry_no_outputs() -> None:
    for path in (REPO / "notebooks").glob("*.ipynb"):
        cells = json.loads(path.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert all(not c["outputs"] and c["execution_count"] is None for c in code), path.name


def test_backfill_notebook_fills_redis_and_writes_the_report(
    tmp_path: Path,
    kernel_env: None,
    redis_url: str,
    key_template: str,
    sync_redis: redis.Redis,
    ec_key: TestKey,
) -> None:
    report_path = tmp_path / "report.json"
    out = run_notebook(
        tmp_path,
        symbols="BTC-USD,ETH-USD",
        redis_url=redis_url,
        key_template=key_template,
        report_path=str(report_path),
    )
    report = json.loads(report_path.read_text())
    assert report["ready"] and report["exit_code"] == 0 and len(report["series"]) == 4
    for symbol in ("BTC-USD", "ETH-USD"):
        for tf in ("1h", "4h"):
            assert sync_redis.zcard(format_key(key_template, symbol, tf)) == 300
    assert_no_secret(out, ec_key)
    # What a static viewer shows under the run cell: the bar where it ended, then the verdict.
    (bar, verdict) = cell_outputs(out, "notebook_bar()")
    assert (
        bar["output_type"] == "display_data"
        and "application/vnd.jupyter.widget-view+json" not in bar["data"]
    )
    assert (
        bar["data"]["text/plain"].startswith("backfill: 100%")
        and "| 4/4 [" in bar["data"]["text/plain"]
    )
    assert verdict["output_type"] == "stream" and verdict["name"] == "stdout"
    assert re.fullmatch(
        r"READY: 4 ready in \d+\.\ds, \d+ requests, \d+ retries, \d+ rate-limited\n",
        verdict["text"],
    )


def test_backfill_notebook_reads_a_config_file_under_the_parameters_set(
    tmp_path: Path,
    kernel_env: None,
    redis_url: str,
    key_template: str,
    sync_redis: redis.Redis,
) -> None:
    config_file = tmp_path / "livermore.toml"
    config_file.write_text(
        f'symbols = ["BTC-USD"]\ntimeframes = "1h,1d"\ncandles = 40\nmin_candles = 40\n'
        f'key_template = "{key_template}"\nttl = 7200\ntimeout = 5\n'
    )
    report_path = tmp_path / "report.json"
    # timeframes=None: left unset (run_notebook sets it otherwise); candles given: it wins
    run_notebook(tmp_path, config_file=str(config_file), timeframes=None, candles=50,
                 redis_url=redis_url, report_path=str(report_path))  # fmt: skip
    report = json.loads(report_path.read_text())
    assert report["ready"], report
    assert [(s["symbol"], s["timeframe"]) for s in report["series"]] == [
        ("BTC-USD", "1h"), ("BTC-USD", "1d"),
    ]  # fmt: skip
    for tf in ("1h", "1d"):
        key = format_key(key_template, "BTC-USD", tf)
        assert sync_redis.zcard(key) == 50 and 0 < sync_redis.ttl(key) <= 7200


def test_coverage_notebook_defaults_read_what_make_demo_filled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("LIVERMORE_REDIS_DB", str(tmp_path / "demo.db"))
    demo = subprocess.run(
        [sys.executable, "-m", "livermore_nb.demo"],
        cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    out = tmp_path / "coverage.ipynb"
    pm.execute_notebook(
        str(REPO / "notebooks" / "coverage.ipynb"), str(out),
        kernel_name="python3", progress_bar=False, cwd=str(tmp_path),
    )  # no parameters: the defaults  # fmt: skip
    assert cell_outputs(out, "await ensure_offline_cache(") == []  # the demo's cache was used
    (table,) = cell_outputs(out, "cov = summarize(")
    text = table["data"]["text/plain"]
    assert "[125 rows x 10 columns]" in text  # 25 symbols × 5 timeframes, every one held
    assert "MATIC-USD" in text and " 0 days " not in text and not re.search(r"\d\.\d+ s", text)
    assert re.search(r"\s(\d+ [hm] )*\d+ s\s+False\s", text)  # ages to the second, then stale
    (attention,) = cell_outputs(out, 'cov["stale"]]')  # only stale ones: the demo fills 300
    assert " days " not in attention["data"]["text/plain"]
    assert not re.search(r"\s(?!300)\d+\s+300\s", attention["data"]["text/plain"])


def test_unknown_product_fails_the_gate(
    tmp_path: Path,
    kernel_env: None,
    redis_url: str,
    key_template: str,
) -> None:
    report_path = tmp_path / "report.json"
    with pytest.raises(pm.PapermillExecutionError) as failed:
        run_notebook(
            tmp_path,
            symbols="BTC-USD,NOPE-USD",
            redis_url=redis_url,
            key_template=key_template,
            report_path=str(report_path),
        )
    assert failed.value.ename == "NotReady" and "NOPE-USD" in failed.value.evalue
    report = json.loads(report_path.read_text())
    assert not report["ready"] and report["exit_code"] == 3
    statuses = {(s["symbol"], s["status"]) for s in report["series"]}
    assert statuses == {("BTC-USD", "ready"), ("NOPE-USD", "failed")}


@pytest.mark.cluster
def test_startup_runs_command_when_ready_and_keeps_secrets_out(
    tmp_path: Path,
    coinbase_env: dict[str, str],
    redis_url: str,
    key_template: str,
    sync_redis: redis.Redis,
    ec_key: TestKey,
) -> None:
    out = tmp_path / "startup.ipynb"
    done = startup(
        tmp_path, coinbase_env, "--symbols", "SOL-USD", "--timeframes", "1h",
        "--redis-url", redis_url, "--key-template", key_template,
        "--output-notebook", str(out), "--report", str(tmp_path / "report.json"),
        "--", sys.executable, "-c", MARKER + "; raise SystemExit(7)",
    )  # fmt: skip
    assert done.returncode == 7, done.stderr  # COMMAND replaced startup: its code is ours
    assert (tmp_path / "marker").exists()
    assert json.loads((tmp_path / "report.json").read_text())["exit_code"] == 0
    executed = json.loads(out.read_text())
    params = executed["metadata"]["papermill"]["parameters"]
    assert params["use_emulator"] is False and params["redis_url"] is None
    assert sync_redis.zcard(format_key(key_template, "SOL-USD", "1h")) == 300
    assert_no_secret(out, ec_key)
    assert ec_key.secret not in done.stdout + done.stderr
    password = urlsplit(redis_url).password  # the cluster's URL carries one
    assert not password or password not in out.read_text() + done.stdout + done.stderr


def test_startup_hands_the_notebook_a_config_files_options_under_its_flags(
    tmp_path: Path, coinbase_env: dict[str, str], redis_url: str, key_template: str
) -> None:
    config_file = tmp_path / "livermore.toml"
    config_file.write_text(
        f'symbols = "SOL-USD"\ntimeframes = "1h,1d"\ncandles = 40\nmin_candles = 30\n'
        f'key_template = "{key_template}"\nredis_url = "redis://127.0.0.1:1/0"\n'
    )
    out = tmp_path / "startup.ipynb"
    done = startup(
        tmp_path, coinbase_env, "--config", str(config_file), "--candles", "60",
        "--redis-url", redis_url, "--output-notebook", str(out),
        "--report", str(tmp_path / "report.json"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr  # --redis-url beat the file's dead Redis
    params = json.loads(out.read_text())["metadata"]["papermill"]["parameters"]
    assert (params["timeframes"], params["candles"], params["min_candles"]) == ("1h,1d", 60, 30)
    assert params["key_template"] == key_template and params["redis_url"] is None
    assert params["config_file"] is None  # the CLI merged it; the kernel must not reread it
    report = json.loads((tmp_path / "report.json").read_text())
    assert [(s["timeframe"], s["candles"]) for s in report["series"]] == [("1h", 60), ("1d", 60)]


@pytest.mark.parametrize(("allow_partial", "expected"), [(False, 3), (True, 0)])
def test_startup_gates_command_on_not_ready(
    tmp_path: Path,
    coinbase_env: dict[str, str],
    redis_url: str,
    key_template: str,
    allow_partial: bool,
    expected: int,
) -> None:
    done = startup(
        tmp_path, coinbase_env, "--symbols", "NOPE-USD", "--timeframes", "1d",
        "--redis-url", redis_url, "--key-template", key_template,
        "--output-notebook", str(tmp_path / "out.ipynb"),
        *(["--allow-partial"] if allow_partial else []),
        "--", sys.executable, "-c", MARKER,
    )  # fmt: skip
    assert done.returncode == expected, done.stderr
    assert (tmp_path / "marker").exists() is allow_partial
    assert "startup: exit 3 (1 failed)" in done.stderr


def test_startup_recovers_redis_unavailable_from_the_kernel(
    tmp_path: Path, coinbase_env: dict[str, str]
) -> None:
    done = startup(
        tmp_path, coinbase_env, "--symbols", "BTC-USD", "--timeframes", "1d",
        "--redis-url", "redis://127.0.0.1:1/0", "--output-notebook", str(tmp_path / "out.ipynb"),
        "--", sys.executable, "-c", MARKER,
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    assert not (tmp_path / "marker").exists()
    assert "livermore-nb: error: RedisUnavailable: Redis unreachable at 127.0.0.1:1" in done.stderr


def test_exit_codes_by_exception_name() -> None:
    assert [exit_code_for(n) for n in ("NotReady", "ConfigError", "RedisUnavailable")] == [3, 2, 4]
    assert exit_code_for("AuthError") == 5
    assert exit_code_for("ZeroDivisionError") == EXIT_FAILURE


def test_startup_config_errors_exit_2_before_any_kernel(tmp_path: Path) -> None:
    done = startup(tmp_path, {}, "--timeframes", "1h", "--", "true")
    assert done.returncode == 2 and "give --symbols" in done.stderr


# ---------------------------------------------------------------- signals (issue 15 #17)


@pytest.fixture
def slow_coinbase_env(ec_key: TestKey) -> Iterator[tuple[EmulatorThread, dict[str, str]]]:
    """A threaded emulator answering after 300 ms, and the env pointing at it."""
    config = EmulatorConfig(
        keys={ec_key.name: ec_key.public_key}, latency_ms=300, shutdown_timeout_s=0.2
    )
    with EmulatorThread(config) as emulator:
        yield (
            emulator,
            {
                "COINBASE_API_URL": emulator.url,
                "COINBASE_API_KEY_NAME": ec_key.name,
                "COINBASE_API_PRIVATE_KEY": ec_key.secret,
            },
        )


def _namespace(client: redis.Redis, template: str) -> list[bytes]:
    return sorted(client.scan_iter(match=template.split(":candles")[0] + ":*"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_startup_stops_the_kernel_cleanly_and_reports_why(
    sig: signal.Signals,
    tmp_path: Path,
    slow_coinbase_env: tuple[EmulatorThread, dict[str, str]],
    redis_url: str,
    key_template: str,
    sync_redis: redis.Redis,
) -> None:
    emulator, env = slow_coinbase_env
    report_path, out = tmp_path / "report.json", tmp_path / "startup.ipynb"
    symbols = "BTC-USD,ETH-USD,SOL-USD,ADA-USD,LINK-USD,ICP-USD,DOT-USD,AVAX-USD"
    args = [sys.executable, "-m", "livermore_nb.cli", "startup", "--symbols", symbols]
    args += ["--timeframes", "5m,1h", "--candles", "60", "--min-candles", "60"]
    args += ["--rate", "4", "--concurrency", "2", "--redis-url", redis_url]
    args += ["--key-template", key_template, "--report", str(report_path)]
    args += ["--output-notebook", str(out), "--", sys.executable, "-c", MARKER]
    proc = subprocess.Popen(
        args, cwd=tmp_path, env={**os.environ, **env}, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 90
    while not _namespace(sync_redis, key_template):  # the kernel's backfill has written a series
        assert proc.poll() is None and time.monotonic() < deadline, "no series written"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err  # interrupted: some series not fetched, like backfill
    assert "Traceback" not in err and not (tmp_path / "marker").exists()
    report = json.loads(report_path.read_text())
    assert report["ready"] is False and "interrupted" in report["error"]
    assert "livermore-nb: error: interrupted" in err
    unfinished = [s for s in report["series"] if s["status"] == "failed"]
    assert unfinished and f"{unfinished[0]['symbol']} {unfinished[0]['timeframe']}: failed" in err
    requests_at_exit = emulator.emulator.stats.total
    keys_at_exit = {k: sync_redis.zcard(k) for k in _namespace(sync_redis, key_template)}
    time.sleep(1.0)  # the kernel must be gone: nothing is fetched or written after startup exits
    assert emulator.emulator.stats.total == requests_at_exit
    assert {k: sync_redis.zcard(k) for k in _namespace(sync_redis, key_template)} == keys_at_exit
    assert out.stat().st_mode & 0o077 == 0 and report_path.stat().st_mode & 0o077 == 0


def test_a_failed_startup_says_why_on_stderr(tmp_path: Path, coinbase_env: dict[str, str]) -> None:
    report_path = tmp_path / "report.json"
    report_path.write_text(json.dumps({"ready": True, "exit_code": 0}))
    done = startup(
        tmp_path, coinbase_env, "--symbols", "BTC-USD", "--timeframes", "1d",
        "--redis-url", "redis://:Zq1/Yw2?Xv3@127.0.0.1:1/0", "--report", str(report_path),
        "--output-notebook", str(tmp_path / "out.ipynb"), "--", sys.executable, "-c", MARKER,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr  # the malformed URL is a configuration error
    assert "livermore-nb: error: ConfigError: invalid Redis URL" in done.stderr
    report = json.loads(report_path.read_text())
    assert report["ready"] is False and report["exit_code"] == 2
    notebook = (tmp_path / "out.ipynb").read_text()
    for piece in ("Zq1", "Yw2", "Xv3"):  # the password is in no output, the notebook included
        assert piece not in notebook + done.stderr + report_path.read_text()
    assert (tmp_path / "out.ipynb").stat().st_mode & 0o077 == 0
