"""progress.py: on a terminal the bar and the event lines share stderr and stay readable.

The CLI runs with its stderr on a real pseudo-terminal (so it draws the bar) and
every JSON event line must still parse.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest

from livermore_nb.emulator import EmulatorConfig, EmulatorThread, TestKey

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def api(ec_key: TestKey) -> Iterator[EmulatorThread]:
    """An emulator in a thread, answering after 20 ms so the bar gets drawn between events."""
    config = EmulatorConfig(keys={ec_key.name: ec_key.public_key}, latency_ms=20)
    with EmulatorThread(config) as running:
        yield running


def read_all(fd: int) -> bytes:
    """Everything written to the pty until the child closed it."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_json_events_stay_whole_next_to_the_bar_on_a_terminal(
    api: EmulatorThread, ec_key: TestKey, redis_url: str, key_template: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COINBASE_", "REDIS_URL"))}
    env |= {
        "COINBASE_API_URL": api.url,
        "COINBASE_API_KEY_NAME": ec_key.name,
        "COINBASE_API_PRIVATE_KEY": ec_key.secret,
        "REDIS_URL": redis_url,
    }
    symbols = "BTC-USD,ETH-USD,SOL-USD,ADA-USD,LINK-USD"  # liquid: the gate is not the point here
    args = [sys.executable, "-m", "livermore_nb.cli", "backfill", "--symbols", symbols]
    args += ["--timeframes", "5m,15m,1h", "--candles", "50", "--min-candles", "50"]
    args += ["--key-template", key_template, "--log-format", "json", "--concurrency", "2"]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real size
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=slave, cwd=tmp_path)
    os.close(slave)
    try:
        raw = read_all(master)
    finally:
        os.close(master)
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    text = ANSI.sub("", raw.decode())
    assert "backfill:" in text and "series" in text  # the bar was drawn on the terminal
    events = []
    for line in text.replace("\r\n", "\n").split("\n"):
        visible = line.rsplit("\r", 1)[-1].strip()  # what stays on screen after the last \r
        if '"event"' in line:
            assert visible.startswith("{"), repr(line)
            events.append(json.loads(visible)["event"])
    assert events[0] == "backfill_start" and events[-1] == "backfill_complete"
    assert "backfill_progress" in events
