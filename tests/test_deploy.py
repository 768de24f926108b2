"""docs/deploy: the compose file parses, and its entrypoint and commands do what it says.

The emulator runs from the compose file's own ``emulator`` command (on loopback),
the indicator service's entrypoint runs as a real subprocess against it and a
private redis-server, and its ``command`` (``python -m indicator_service``)
finds a stand-in module that records that it was started.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from livermore_nb.emulator import make_test_key, write_key_file

DEPLOY = Path(__file__).resolve().parent.parent / "docs" / "deploy"
STAND_IN = """
import os, sys
from pathlib import Path
Path(os.environ["STARTED_MARKER"]).write_text(" ".join(sys.argv))
print("indicator service started")
"""


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def mounted(service: dict, target: str) -> Path:
    """The host file of the volume that mounts ``target`` (relative to docs/deploy)."""
    for volume in service["volumes"]:
        source, _, rest = volume.partition(":")
        if rest.split(":")[0] == target:
            return DEPLOY / source
    raise AssertionError(f"nothing mounts {target}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return write_key_file(tmp_path / "cdp_api_key.json", make_test_key("ec"))


def start_emulator(compose: dict, key_file: Path, *extra: str) -> Iterator[str]:
    """The compose file's emulator command, on a free loopback port, with the test key."""
    command = list(compose["services"]["emulator"]["command"])
    port = str(free_port())
    command[command.index("0.0.0.0")] = "127.0.0.1"
    command[command.index("8765")] = port
    command[command.index("/run/secrets/cdp_api_key")] = str(key_file)
    bin_dir = Path(sys.executable).parent
    proc = subprocess.Popen(
        [str(bin_dir / command[0]), *command[1:], *extra], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert "livermore-nb emulator on" in proc.stdout.readline()  # it prints once it listens
    yield f"http://127.0.0.1:{port}"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


@pytest.fixture
def emulator_url(compose: dict, key_file: Path) -> Iterator[str]:
    yield from start_emulator(compose, key_file)


def entrypoint_env(
    compose: dict, tmp_path: Path, redis_url: str, api_url: str, key_file: Path
) -> dict[str, str]:
    """The indicator service's environment, pointed at the test's Redis, emulator and files."""
    service = compose["services"]["indicator"]
    env = {k: str(v) for k, v in service["environment"].items()}
    assert env["REDIS_URL"] == "redis://redis:6379/0"  # the compose network's redis, no password
    assert env["COINBASE_API_PRIVATE_KEY_FILE"].startswith("/run/secrets/")  # a secret file
    assert "COINBASE_API_PRIVATE_KEY" not in env and not any("BEGIN" in v for v in env.values())
    (tmp_path / "indicator_service").mkdir(exist_ok=True)
    (tmp_path / "indicator_service" / "__main__.py").write_text(STAND_IN)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("COINBASE_", "REDIS_URL"))}
    return {
        **base,
        **env,
        "REDIS_URL": redis_url,
        "COINBASE_API_URL": api_url,
        "COINBASE_API_PRIVATE_KEY_FILE": str(key_file),
        "LIVERMORE_CONFIG": str(mounted(service, env["LIVERMORE_CONFIG"])),
        "LIVERMORE_REPORT": str(tmp_path / "report.json"),
        "STARTED_MARKER": str(tmp_path / "started"),
        "PYTHONPATH": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }


def entrypoint_argv(compose: dict) -> list[str]:
    service = compose["services"]["indicator"]
    (entry,) = service["entrypoint"]
    script = mounted(service, entry)
    assert os.access(script, os.X_OK)
    return [str(script), *service["command"]]


def test_the_compose_file_wires_redis_secrets_and_the_entrypoint(compose: dict) -> None:
    services = compose["services"]
    indicator = services["indicator"]
    assert indicator["depends_on"]["redis"]["condition"] == "service_healthy"
    assert indicator["secrets"] == ["cdp_api_key"] and indicator["init"] is True
    assert indicator["healthcheck"]["test"][1:4] == ["livermore-nb", "coverage", "--check"]
    assert services["emulator"]["profiles"] == ["offline"]
    config = mounted(indicator, indicator["environment"]["LIVERMORE_CONFIG"])
    assert config.name == "livermore.toml" and config.is_file()


@pytest.mark.slow
def test_the_entrypoint_backfills_then_starts_the_service(
    compose: dict, emulator_url: str, key_file: Path, redis_server, tmp_path: Path
) -> None:
    env = entrypoint_env(compose, tmp_path, redis_server.url, emulator_url, key_file)
    result = subprocess.run(
        entrypoint_argv(compose), env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "indicator service started" in result.stdout
    assert (tmp_path / "started").read_text().endswith("indicator_service/__main__.py")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ready"] and len(report["series"]) == 50
    events = [json.loads(line)["event"] for line in result.stderr.splitlines()]
    assert events[0] == "backfill_start" and events[-1] == "backfill_complete"  # json log lines
    with redis.Redis.from_url(redis_server.url) as client:
        assert client.zcard("candles:1:1:BTC-USD:1d") == 300


def test_a_failed_gate_does_not_start_the_service(
    compose: dict, emulator_url: str, key_file: Path, redis_server, tmp_path: Path
) -> None:
    env = entrypoint_env(compose, tmp_path, redis_server.url, emulator_url, key_file)
    config = tmp_path / "livermore.toml"
    config.write_text('symbols = ["SOL-USD", "NOPE-USD"]\ntimeframes = "1h"\n')
    result = subprocess.run(
        entrypoint_argv(compose), env={**env, "LIVERMORE_CONFIG": str(config)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 3
    assert "backfill exited 3; not starting python" in result.stderr
    assert not (tmp_path / "started").exists()
    partial = subprocess.run(
        entrypoint_argv(compose),
        env={**env, "LIVERMORE_CONFIG": str(config), "LIVERMORE_ALLOW_PARTIAL": "1"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert partial.returncode == 0 and (tmp_path / "started").exists()


def test_sigterm_during_the_backfill_stops_it_cleanly_without_the_service(
    compose: dict, key_file: Path, redis_server, tmp_path: Path
) -> None:
    slow = start_emulator(compose, key_file, "--latency-ms", "2000")
    url = next(slow)
    env = entrypoint_env(compose, tmp_path, redis_server.url, url, key_file)
    proc = subprocess.Popen(
        entrypoint_argv(compose), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    assert json.loads(proc.stderr.readline())["event"] == "backfill_start"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 3
    assert "not starting" in proc.stderr.read()
    assert not (tmp_path / "started").exists()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["error"].startswith("interrupted")
    proc.stdout.close()
    proc.stderr.close()
    next(slow, None)
