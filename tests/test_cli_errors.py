"""Issue 15, items 15-16: bad files, non-finite numbers, odd templates, unwritable reports and
signals during start-up end in one ``livermore-nb: error:`` line and DESIGN.md's exit code
(never a traceback), and ``--report`` is written on every exit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import RedisServer

from livermore_nb.candles import Candle, aggregate
from livermore_nb.cli import main
from livermore_nb.emulator import EmulatorConfig, EmulatorThread, TestKey
from livermore_nb.errors import EXIT_NOT_READY, EXIT_REDIS, EXIT_USAGE, MalformedResponse
from livermore_nb.timeframes import get_timeframe

CLOSED_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Coinbase key and no Redis URL from the outer environment."""
    for name in list(os.environ):
        if name.startswith(("COINBASE_", "REDIS_URL")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COINBASE_API_URL", "http://127.0.0.1:9")  # nothing listens there


def one_line_error(err: str, needle: str) -> None:
    """A single ``livermore-nb: error:`` line naming ``needle``, no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("livermore-nb: error: "), err
    assert needle in lines[0] and "Traceback" not in err


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``main(args)``: its exit code and stderr."""
    code = main(args)
    return code, capsys.readouterr().err


# ---------------------------------------------------------------- files


def test_a_symbols_file_that_is_not_utf8_exits_2(
    clean_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "symbols.txt"
    path.write_bytes(b"BTC-USD\n\xff\xfeETH-USD\n")
    code, err = run_main(["backfill", "--symbols-file", str(path)], capsys)
    assert code == EXIT_USAGE
    one_line_error(err, "not UTF-8")


def test_a_symbols_file_with_a_utf8_bom_is_accepted(
    clean_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "symbols.txt"
    path.write_bytes("\ufeffBTC-USD\r\nETH-USD\r\n".encode())
    args = ["backfill", "--symbols-file", str(path), "--redis-url", CLOSED_REDIS]
    code, err = run_main(args, capsys)
    assert code == EXIT_REDIS, err  # got past the symbols to Redis
    one_line_error(err, "unreachable")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"\xff\xfe{\x00}", "not UTF-8"),
        (b'{"name": "organizations/o/apiKeys/k", "privateKey": 123}', "privateKey"),
        (b'{"name": ["x"], "privateKey": "abc"}', "name"),
        (b'["not", "an", "object"]', "not a CDP key JSON file"),
    ],
)
def test_a_broken_key_file_exits_2(
    clean_env: None,
    content: bytes,
    needle: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "key.json"
    path.write_bytes(content)
    path.chmod(0o600)
    monkeypatch.setenv("COINBASE_API_PRIVATE_KEY_FILE", str(path))
    args = ["backfill", "--symbols", "BTC-USD", "--redis-url", CLOSED_REDIS]
    code, err = run_main(args, capsys)
    assert code == EXIT_USAGE, err
    one_line_error(err, needle)


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--rate", "inf"], "--rate"),
        (["--rate", "nan"], "--rate"),
        (["--timeout", "inf"], "--timeout"),
        (["--timeout", "nan"], "--timeout"),
        (["--key-template", "c:{symbol:{x}}:{timeframe}"], "key template"),
        (["--key-template", "c:{symbol!r}:{timeframe:>{w}}"], "key template"),
        (["--key-template", "c:{symbol:%}:{timeframe}"], "key template"),
    ],
)
def test_non_finite_numbers_and_format_specs_exit_2_before_redis(
    clean_env: None, extra: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["backfill", "--symbols", "BTC-USD", "--redis-url", CLOSED_REDIS, *extra]
    code, err = run_main(args, capsys)
    assert code == EXIT_USAGE, err  # not 4: nothing was tried against Redis
    one_line_error(err, needle)


# ---------------------------------------------------------------- 4h volume overflow


def test_4h_volumes_that_overflow_are_rejected_as_malformed() -> None:
    h = 3_600_000
    candles = [Candle(i * h, 1.0, 1.0, 1.0, 1.0, 1.5e308) for i in range(8)]
    with pytest.raises(MalformedResponse, match="volume"):
        aggregate(candles, get_timeframe("4h"), 0, 8 * h)
    fine = aggregate(candles[:1] + [c._replace(volume=1.0) for c in candles[1:]],
                     get_timeframe("4h"), 0, 8 * h)  # fmt: skip
    assert [c.volume for c in fine] == [1.5e308 + 3.0, 4.0]


# ---------------------------------------------------------------- --report on every exit


@pytest.fixture
def api(ec_key: TestKey) -> Iterator[EmulatorThread]:
    """An emulator in a thread that knows ``ec_key``."""
    with EmulatorThread(EmulatorConfig(keys={ec_key.name: ec_key.public_key})) as running:
        yield running


def test_an_unwritable_report_exits_2_before_anything_is_fetched_or_written(
    clean_env: None,
    api: EmulatorThread,
    redis_url: str,
    key_template: str,
    sync_redis: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("COINBASE_API_URL", api.url)
    report = tmp_path / "missing-dir" / "report.json"
    args = ["backfill", "--symbols", "BTC-USD", "--timeframes", "1h", "--candles", "20"]
    args += ["--min-candles", "20", "--redis-url", redis_url, "--key-template", key_template]
    code, err = run_main([*args, "--report", str(report)], capsys)
    assert code == EXIT_USAGE
    one_line_error(err, "cannot write the report")
    assert api.emulator.stats.total == 0
    assert list(sync_redis.scan_iter(match=key_template.split(":candles")[0] + ":*")) == []


@pytest.mark.parametrize(
    ("extra", "expected", "needle"),
    [
        (["--redis-url", CLOSED_REDIS], EXIT_REDIS, "unreachable"),
        (["--redis-url", CLOSED_REDIS, "--timeframes", "3h"], EXIT_USAGE, "unknown timeframe"),
        (["--redis-url", CLOSED_REDIS, "--rate", "inf"], EXIT_USAGE, "--rate"),
    ],
)
def test_a_run_that_fails_at_start_replaces_an_old_report(
    clean_env: None,
    extra: list[str],
    expected: int,
    needle: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"ready": True, "exit_code": 0, "series": []}))
    code, err = run_main(["backfill", "--symbols", "BTC-USD", "--report", str(report), *extra],
                         capsys)  # fmt: skip
    assert code == expected
    one_line_error(err, needle)
    written = json.loads(report.read_text())
    assert written["ready"] is False and written["exit_code"] == expected
    assert needle in written["error"]
    assert report.stat().st_mode & 0o077 == 0  # the owner's only


# ---------------------------------------------------------------- a signal while importing

INTERRUPT_DURING_IMPORTS = textwrap.dedent(
    """
    import os, signal, sys

    class InterruptOnAiohttp:  # the heaviest module a backfill loads
        def find_spec(self, name, path=None, target=None):
            if name == "aiohttp":
                os.kill(os.getpid(), signal.SIGINT)
            return None

    sys.meta_path.insert(0, InterruptOnAiohttp())
    from livermore_nb.cli import main  # what the livermore-nb console script does
    sys.exit(main(sys.argv[1:]))
    """
)


def test_a_ctrl_c_while_modules_load_exits_130_without_a_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COINBASE_", "REDIS_URL"))}
    proc = subprocess.run(
        [sys.executable, "-c", INTERRUPT_DURING_IMPORTS, "backfill", "--symbols", "BTC-USD"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 128 + signal.SIGINT, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip() == "livermore-nb: interrupted"


def test_exit_codes_are_distinct() -> None:
    assert len({EXIT_USAGE, EXIT_NOT_READY, EXIT_REDIS}) == 3


# ---------------------------------------------------------------- Redis errors (item 18)

REDIS_PASSWORD = "Zq1-redis-Yw2"


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server that wants ``REDIS_PASSWORD``, with a user that may only read."""
    server = RedisServer(tmp_path, password=REDIS_PASSWORD).start()
    with redis.Redis.from_url(server.url) as client:
        client.execute_command("ACL", "SETUSER", "reader", "on", ">readpw", "~*", "+@read")
    yield server
    server.kill()


def test_a_wrong_or_missing_redis_password_says_authentication_failed(
    clean_env: None, locked_redis: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    where = f"127.0.0.1:{locked_redis.port}"
    for url in (f"redis://:wrong-{REDIS_PASSWORD[::-1]}@{where}/0", f"redis://{where}/0"):
        code, err = run_main(["backfill", "--symbols", "BTC-USD", "--redis-url", url], capsys)
        assert code == EXIT_REDIS
        one_line_error(err, f"Redis authentication failed at {where}")
        assert "unreachable" not in err and REDIS_PASSWORD[::-1] not in err


def test_an_acl_user_without_permission_is_named_with_the_host(
    clean_env: None, locked_redis: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    where = f"127.0.0.1:{locked_redis.port}"
    url = f"redis://reader:readpw@{where}/0"
    code, err = run_main(["backfill", "--symbols", "BTC-USD", "--redis-url", url], capsys)
    assert code == EXIT_REDIS
    one_line_error(err, f"Redis at {where} refused")
    assert "readpw" not in err


def test_an_unreachable_redis_is_named_by_host_and_port(
    clean_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0"
    code, err = run_main(["backfill", "--symbols", "BTC-USD", "--redis-url", url], capsys)
    assert code == EXIT_REDIS
    one_line_error(err, "Redis unreachable at 127.0.0.1:1 while connecting")
