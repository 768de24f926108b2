"""Scale: many symbols × 5 timeframes × 1,000 candles, measured in a fresh process.

``run_scale`` starts ``python -m benchmarks.scale`` once per size, so peak RSS
(``ru_maxrss``) belongs to that run alone; the child prints one JSON object.
CPU time is the child's ``time.process_time()`` around ``await backfill(...)``:
parse, validate, aggregate 4h, serialise and write — everything the client does.
The key reaches the child through its environment, never its command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from livermore_nb.backfill import BackfillConfig, backfill
from livermore_nb.timeframes import DEFAULT_TIMEFRAMES

from .harness import KEY_TEMPLATE, BenchKey, client_env

Row = dict[str, Any]
SCALE_RATE = 5000.0
"""Our pacer's rate for scale runs: far above what one core can parse, so it never binds."""


def synthetic_symbols(count: int) -> tuple[str, ...]:
    """``SYN0001-USD`` … (the emulator serves any ``SYN<digits>-USD``)."""
    return tuple(f"SYN{i:04d}-USD" for i in range(1, count + 1))


async def measure(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """One backfill of ``args.symbols`` synthetic products: wall, CPU, memory; a profile."""
    import psutil

    config = BackfillConfig(
        symbols=synthetic_symbols(args.symbols),
        timeframes=DEFAULT_TIMEFRAMES,
        candles=args.candles,
        keep=args.candles,
        rate=args.rate,
        full=True,
        redis_url=args.redis_url,
        key_template=KEY_TEMPLATE,
    )
    env = {**client_env(args.api_url, None), **{k: os.environ[k] for k in KEY_ENV}}
    rss_before = psutil.Process().memory_info().rss
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="enabled")
        profiler.start()
    cpu, wall = time.process_time(), time.perf_counter()
    report = await backfill(config, env=env)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    profile = ""
    if profiler is not None:
        profiler.stop()
        profile = profiler.output_text(unicode=True, show_all=False)
    return {
        "symbols": args.symbols,
        "series": len(report.series),
        "ready": sum(s.status == "ready" for s in report.series),
        "candles": sum(s.fetched for s in report.series),
        "requests": report.requests,
        "429s": report.rate_limited,
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_before_mb": rss_before / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }, profile


KEY_ENV = ("COINBASE_API_KEY_NAME", "COINBASE_API_PRIVATE_KEY")


def run_scale(
    api_url: str, redis_url: str, key: BenchKey, symbols: int, candles: int, profile: str = ""
) -> Row:
    """Run one scale measurement in a fresh interpreter and return its row."""
    command = [sys.executable, "-m", "benchmarks.scale", "--api-url", api_url]
    command += ["--redis-url", redis_url, "--symbols", str(symbols), "--candles", str(candles)]
    if profile:
        command += ["--profile", profile]
    env = {**os.environ, **client_env(api_url, key)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"scale run failed: {done.stderr[-2000:]}")
    r = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "symbols": r["symbols"],
        "series": r["series"],
        "ready": f"{r['ready']}/{r['series']}",
        "candles written": r["candles"],
        "requests": r["requests"],
        "wall s": round(r["wall_s"], 2),
        "candles/s": round(r["candles"] / r["wall_s"]),
        "wall µs/candle": round(1e6 * r["wall_s"] / r["candles"], 2),
        "CPU s": round(r["cpu_s"], 2),
        "CPU µs/candle": round(1e6 * r["cpu_s"] / r["candles"], 2),
        "peak RSS MB": round(r["peak_rss_mb"], 1),
        "RSS before MB": round(r["rss_before_mb"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Child entry point: measure once, print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale")
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--candles", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=SCALE_RATE)
    parser.add_argument("--profile", default="", help="write a pyinstrument text profile here")
    args = parser.parse_args(argv)
    row, profile = asyncio.run(measure(args))
    if args.profile:
        Path(args.profile).write_text(profile)
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
