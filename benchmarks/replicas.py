"""Replicas: N `livermore-nb backfill` processes started at once on one key and one Redis.

Every process is a fresh CLI run (interpreter start-up included) of the cold-start
workload against the rate-limited emulator; the store is cleared between sizes.
Requests, 429s and the per-second peak come from the emulator's own statistics;
``fetched`` and ``from peer`` from the replicas' reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .harness import KEY_TEMPLATE, BenchKey, BenchRedis, EmulatorProcess, client_env
from .scenarios import Workload

Row = dict[str, Any]


def replica_command(workload: Workload, redis_url: str, report: Path) -> list[str]:
    """The `livermore-nb backfill` command line of one replica (the key stays in the env)."""
    command = [str(Path(sys.executable).with_name("livermore-nb")), "backfill"]
    command += ["--symbols", ",".join(workload.symbols)]
    command += ["--timeframes", ",".join(workload.timeframes)]
    command += ["--candles", str(workload.candles), "--redis-url", redis_url]
    return [*command, "--key-template", KEY_TEMPLATE, "--report", str(report)]


def run_replicas(
    api: EmulatorProcess, store: BenchRedis, key: BenchKey, workload: Workload, count: int
) -> Row:
    """Start ``count`` replicas together; wall time until the last exits, and what they did."""
    store.clear()
    api.reset()
    env = {**os.environ, **client_env(api.url, key)}
    with tempfile.TemporaryDirectory() as tmp:
        reports = [Path(tmp) / f"replica{i}.json" for i in range(count)]
        started = time.perf_counter()
        procs = [
            subprocess.Popen(replica_command(workload, store.url, path), env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for path in reports
        ]  # fmt: skip
        codes = [proc.wait() for proc in procs]
        wall = time.perf_counter() - started
        docs = [json.loads(path.read_text()) for path in reports]
    stats = api.stats()
    sources = [s.get("source") for doc in docs for s in doc["series"]]
    return {
        "replicas": count,
        "wall s (last exit)": round(wall, 2),
        "slowest run s": round(max(d["duration_s"] for d in docs), 2),
        "requests": stats["total"],
        "429s": stats["rate_limited"],
        "server peak/1s": stats["peak_1s"],
        "fetched": sources.count("fetched"),
        "from peer": sources.count("peer"),
        "exit codes": ",".join(sorted(set(map(str, codes)))),
    }


def replicas_table(
    api: EmulatorProcess, store: BenchRedis, key: BenchKey, workload: Workload, counts: list[int]
) -> tuple[list[Row], list[str]]:
    """One row per replica count, and the goal check against the single process."""
    rows = [run_replicas(api, store, key, workload, n) for n in counts]
    store.clear()
    one = rows[0]
    for row in rows:
        row["requests × one"] = round(row["requests"] / one["requests"], 3)
        row["slowest × one"] = round(row["slowest run s"] / one["slowest run s"], 3)
    met = all(
        r["429s"] == 0 and r["requests × one"] <= 1.05 and r["slowest × one"] <= 1.15 for r in rows
    )
    notes = [
        f"Goal for every row: 0 × 429, requests ≤ 1.05 × and slowest run ≤ 1.15 × the "
        f"{one['replicas']}-process row: **{'met' if met else 'MISSED'}**. *slowest run*: the "
        "longest `duration_s` any replica reported (its backfill, without interpreter "
        "start-up); *wall*: from starting the processes until the last exited, start-up on "
        f"this {os.cpu_count()}-core machine included. Every replica shares one rate budget "
        "and one 429 pause in Redis and takes a lease per series: *fetched* counts series a "
        "replica fetched itself, *from peer* series it read after another replica wrote them.",
    ]
    return rows, notes
