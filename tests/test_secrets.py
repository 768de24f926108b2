"""Secrets never leak: run with a known key and a Redis password, scan everything produced.

Scanned: stdout and stderr (text and ``--log-format json``), the report file,
``--help`` and the messages of the errors that mention keys or URLs. The needles
are every base64 line of the PEM body, the Ed25519 base64 string and its
halves, and the Redis password.
"""

from __future__ import annotations

import base64
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RedisServer

from livermore_nb.coinbase import load_credentials, parse_private_key
from livermore_nb.emulator import (
    EmulatorConfig,
    EmulatorThread,
    TestKey,
    make_test_key,
    write_key_file,
)
from livermore_nb.errors import LivermoreError
from livermore_nb.store import connect

PASSWORD = "s3cretpass-Zq81"


def needles(secret: str) -> list[str]:
    """Substrings of a key that must never appear anywhere (PEM body lines, base64 chunks)."""
    lines = [ln for ln in secret.replace("\\n", "\n").splitlines() if ln and "-----" not in ln]
    found = [ln for ln in lines if len(ln) >= 16]
    if "-----" not in secret:  # base64 Ed25519: the whole string, the seed half and the raw seed
        raw = base64.b64decode(secret)
        found += [secret, base64.b64encode(raw[:32]).decode(), raw[:32].hex()]
    return [*found, PASSWORD]


def assert_clean(text: str, secret: str, where: str) -> None:
    """No needle of ``secret`` (or the password) in ``text``."""
    leaked = [n for n in needles(secret) if n in text]
    assert not leaked, f"secret material in {where}: {leaked[0][:12]}…"


@pytest.fixture(scope="module")
def keys() -> dict[str, TestKey]:
    """One key of each kind Coinbase issues."""
    return {"ec": make_test_key("ec"), "ed25519": make_test_key("ed25519")}


@pytest.fixture(scope="module")
def api(keys: dict[str, TestKey]) -> Iterator[EmulatorThread]:
    """An emulator in a thread that knows both keys."""
    config = EmulatorConfig(keys={k.name: k.public_key for k in keys.values()})
    with EmulatorThread(config) as running:
        yield running


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server that requires ``PASSWORD``."""
    server = RedisServer(tmp_path, password=PASSWORD).start()
    yield server
    server.kill()


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``livermore-nb`` as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "livermore_nb.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.mark.parametrize("kind", ["ec", "ed25519"])
def test_key_and_password_never_appear_in_output_report_or_help(
    kind: str,
    keys: dict[str, TestKey],
    api: EmulatorThread,
    password_redis: RedisServer,
    tmp_path: Path,
) -> None:
    key = keys[kind]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COINBASE_", "REDIS_URL"))}
    env |= {
        "COINBASE_API_URL": api.url,
        "COINBASE_API_KEY_NAME": key.name,
        "COINBASE_API_PRIVATE_KEY": key.secret,
        "REDIS_URL": password_redis.url,
    }
    produced: list[tuple[str, str]] = []
    for fmt in ("text", "json"):
        report = tmp_path / f"report-{fmt}.json"
        args = ["backfill", "--symbols", "BTC-USD,NOPE-USD", "--timeframes", "1h,4h"]
        args += ["--candles", "30", "--min-candles", "30", "--report", str(report)]
        proc = run_cli([*args, "--log-format", fmt], env, tmp_path)
        assert proc.returncode == 3, proc.stderr  # NOPE-USD fails: an error path is exercised
        assert "endpoint=private" in proc.stderr or '"endpoint":"private"' in proc.stderr
        produced += [(f"{fmt} stdout", proc.stdout), (f"{fmt} stderr", proc.stderr)]
        produced.append((f"{fmt} report", report.read_text()))
    if kind == "ec":  # error paths and --help do not depend on the key kind: run them once
        produced += error_outputs(env, password_redis, tmp_path)
    for where, text in produced:
        assert_clean(text, key.secret, where)


def error_outputs(env: dict[str, str], server: RedisServer, cwd: Path) -> list[tuple[str, str]]:
    """Output of runs that fail on the Redis URL or password, and of ``--help``."""
    produced = []
    for url in (server.url.replace(PASSWORD, PASSWORD[::-1]), "redis://:x@127.0.0.1:1/0"):
        bad = run_cli(["backfill", "--symbols", "BTC-USD"], env | {"REDIS_URL": url}, cwd)
        assert bad.returncode == 4, bad.stderr
        produced.append(("redis error", bad.stderr + bad.stdout))
    bad_url = f"redis://:{PASSWORD}@127.0.0.1:notaport/0"
    bad = run_cli(["backfill", "--symbols", "BTC-USD", "--redis-url", bad_url], env, cwd)
    assert bad.returncode == 2 and "invalid Redis URL" in bad.stderr
    produced.append(("bad URL error", bad.stderr))
    for command in ([], ["backfill"]):
        helped = run_cli([*command, "--help"], env, cwd)
        assert helped.returncode == 0
        produced.append(("--help", helped.stdout + helped.stderr))
    return produced


def test_error_messages_and_reprs_carry_no_key_material(keys: dict[str, TestKey]) -> None:
    ec_secret = keys["ec"].secret
    broken = [
        ec_secret.replace("\n", "\n#", 2),  # a damaged PEM
        ec_secret.replace("EC PRIVATE", "RSA PRIVATE"),  # the wrong label
        keys["ed25519"].secret[:-8],  # a truncated base64 key
    ]
    for secret in broken:
        with pytest.raises(LivermoreError) as err:
            parse_private_key(secret)
        assert_clean(str(err.value) + repr(err.value), secret, "exception message")
        hidden = err.value.__context__ is None or err.value.__suppress_context__
        assert err.value.__cause__ is None and hidden  # no chained error quoting the key
    for key in keys.values():
        env = {"COINBASE_API_KEY_NAME": key.name, "COINBASE_API_PRIVATE_KEY": key.secret}
        credentials = load_credentials(env)
        assert_clean(repr(credentials) + str(credentials), key.secret, "Credentials repr")
    with pytest.raises(LivermoreError) as url_err:
        connect(f"redis://user:{PASSWORD}@127.0.0.1:6379/x?password={PASSWORD}")
    assert PASSWORD not in str(url_err.value)


@pytest.mark.parametrize(("mode", "warned"), [(0o600, False), (0o640, True), (0o604, True)])
def test_key_files_readable_by_others_get_a_warning(
    mode: int, warned: bool, keys: dict[str, TestKey], tmp_path: Path
) -> None:
    path = tmp_path / "cdp_api_key.json"
    write_key_file(path, keys["ec"])
    path.chmod(mode)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    code = (
        "from livermore_nb.coinbase import load_credentials; import os; "
        "c = load_credentials(os.environ); print(c.algorithm)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("COINBASE_")}
    env["COINBASE_API_PRIVATE_KEY_FILE"] = str(path)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ES256", proc.stderr
    assert ("readable by others" in proc.stderr) is warned, proc.stderr
    assert_clean(proc.stderr + proc.stdout, keys["ec"].secret, "key file warning")


# ---------------------------------------------------------------- malformed URLs (issue 15 #14)

MALFORMED = ["Zq1/Yw2", "Zq1#Yw2", "Zq1?Yw2", "Zq1@Yw2", "Zq1/Yw2?Xv3#Wu4@Tt5"]


@pytest.mark.parametrize("secret", MALFORMED)
@pytest.mark.parametrize(
    "template",
    [
        "redis://:{pw}@127.0.0.1:1/0",
        "redis://user:{pw}@127.0.0.1:1/0",
        "rediss://{pw}@cache.internal:6380/2",
        "unix://:{pw}@/tmp/redis.sock?db=0",
        "redis://127.0.0.1:1/0?db=1&password={pw}",
        "redis://127.0.0.1:1/0?auth_token={pw}&db=1",
    ],
)
def test_redact_url_hides_any_password_whatever_its_characters(template: str, secret: str) -> None:
    from livermore_nb.store import redact_url

    shown = redact_url(template.format(pw=secret))
    assert "***" in shown
    for piece in re.split(r"[/?#@]", secret):
        assert piece not in shown, shown
    if "127.0.0.1:1/0?" in template and "@" not in secret:
        assert "127.0.0.1:1" in shown and "db=1" in shown  # the rest stays readable


@pytest.mark.parametrize("secret", MALFORMED)
def test_a_malformed_redis_url_never_shows_its_password(secret: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COINBASE_", "REDIS_URL"))}
    url = f"redis://:{secret}@127.0.0.1:1/0"
    for extra_env, args in (({}, ["--redis-url", url]), ({"REDIS_URL": url}, [])):
        proc = run_cli(["backfill", "--symbols", "BTC-USD", *args], env | extra_env, tmp_path)
        assert proc.returncode in (2, 4), proc.stderr
        for piece in re.split(r"[/?#@]", secret):
            assert piece not in proc.stderr + proc.stdout, proc.stderr
        assert "Traceback" not in proc.stderr
