"""The offline demo: the emulator, an embedded Redis, a 25-symbol backfill, the table.

``python -m livermore_nb.demo`` (``make demo``) needs no network, no Redis server
and no Coinbase key. The recorded products hold real 1-minute candles for ~32
days (BTC, ETH, DOGE) and ~88 days (XTZ); to reach 300 daily candles the emulator serves a
seeded synthetic walk *before* the recorded span (``extend_history``), and the
21 other products are synthetic throughout. The demo says so when it ends.

Emulator candles go to the embedded Redis unless a Redis is named for them
(``--redis-url``, or ``redis_url`` in the notebooks), never to ``$REDIS_URL``,
which may be the production cache.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from .backfill import BackfillConfig, BackfillReport, backfill, open_store
from .cli import format_report
from .emulator import DEFAULT_SYNTHETIC, EmulatorConfig, EmulatorThread, make_test_key
from .progress import BarSink, EventSink, LogSink
from .store import embedded_redis_url, redact_url, resolve_redis_url
from .timeframes import get_timeframe

RECORDED = ("BTC-USD", "ETH-USD", "DOGE-USD", "XTZ-USD")
DEMO_SYMBOLS: tuple[str, ...] = RECORDED + DEFAULT_SYNTHETIC


@contextmanager
def offline_coinbase(
    *, extend_history: bool = True, **emulator_options: Any
) -> Iterator[dict[str, str]]:
    """Run the emulator with a fresh CDP key; yield the env that points the client at it.

    The key lives only in the returned mapping (and the process's memory): pass
    it as ``env=`` to :func:`backfill`, or merge it into ``os.environ`` for a kernel.
    """
    key = make_test_key("ec")
    config = EmulatorConfig(
        keys={key.name: key.public_key}, extend_history=extend_history, **emulator_options
    )
    with EmulatorThread(config) as emulator:
        yield {
            "COINBASE_API_URL": emulator.url,
            "COINBASE_API_KEY_NAME": key.name,
            "COINBASE_API_PRIVATE_KEY": key.secret,
        }


def emulator_redis_url(redis_url: str | None = None) -> str:
    """Where emulator candles go: the Redis named here, else the embedded one (not $REDIS_URL)."""
    return embedded_redis_url() if redis_url is None else redis_url


async def clear_embedded(config: BackfillConfig) -> None:
    """Delete the demo's series from the *embedded* Redis (never from a server of yours).

    Every demo run re-anchors the emulator's recorded data at "now", so candles
    left by an earlier run would sit at other timestamps with other values.
    """
    if not resolve_redis_url(config.redis_url).startswith("unix://"):
        return
    store = open_store(config)
    try:
        keys = [store.key(s, get_timeframe(tf)) for s in config.symbols for tf in config.timeframes]
        await store.client.delete(*keys)
    finally:
        await store.client.aclose()


async def backfill_offline(
    config: BackfillConfig,
    *,
    on_event: EventSink | None = None,
    extend_history: bool = True,
    stop: asyncio.Event | None = None,
) -> BackfillReport:
    """Backfill ``config`` in full from a fresh emulator (its data re-anchors at every start).

    The emulator serves it whatever ``config.api_url`` says (a config file's may name Coinbase).
    """
    redis_url = emulator_redis_url(config.redis_url)
    config = replace(config, full=True, api_url=None, redis_url=redis_url)
    await clear_embedded(config)
    with offline_coinbase(extend_history=extend_history) as env:
        return await backfill(config, env={**os.environ, **env}, on_event=on_event, stop=stop)


async def empty_series(config: BackfillConfig) -> dict[tuple[str, ...], tuple[str, ...]]:
    """``config``'s series that hold no candle: symbols grouped by their empty timeframes."""
    store = open_store(config)
    try:
        series = [(s, get_timeframe(tf)) for s in config.symbols for tf in config.timeframes]
        infos = await store.info(series)
    finally:
        await store.client.aclose()
    empty: dict[str, tuple[str, ...]] = {}
    for (symbol, tf), info in zip(series, infos, strict=True):
        if not info.count:
            empty[symbol] = (*empty.get(symbol, ()), tf.name)
    groups: dict[tuple[str, ...], tuple[str, ...]] = {}
    for symbol, timeframes in empty.items():
        groups[timeframes] = (*groups.get(timeframes, ()), symbol)
    return groups


def combine_reports(reports: Sequence[BackfillReport]) -> BackfillReport:
    """One report for runs made one after another: their series, summed counters, first error."""
    fatal = next((r for r in reports if r.fatal_exit_code is not None), None)
    return BackfillReport(
        ready=all(r.ready for r in reports),
        duration_s=sum(r.duration_s for r in reports),
        requests=sum(r.requests for r in reports),
        retries=sum(r.retries for r in reports),
        rate_limited=sum(r.rate_limited for r in reports),
        series=[s for r in reports for s in r.series],
        error=next((r.error for r in reports if r.error), None),
        fatal_exit_code=fatal.fatal_exit_code if fatal else None,
    )


async def ensure_offline_cache(
    config: BackfillConfig, *, on_event: EventSink | None = None
) -> BackfillReport | None:
    """Fill from the emulator the series of ``config`` that hold no candle (None: none is empty).

    Lets the analysis notebooks run top to bottom offline, also after a backfill
    of fewer symbols or timeframes. Series that hold candles are not refetched:
    the emulator re-anchors its data at every start, so they are left as they
    are. Like :func:`backfill_offline`, it uses the embedded Redis unless
    ``config.redis_url`` names one.
    """
    config = replace(config, redis_url=emulator_redis_url(config.redis_url))
    reports: list[BackfillReport] = []
    for timeframes, symbols in (await empty_series(config)).items():
        part = replace(config, symbols=symbols, timeframes=timeframes)
        reports.append(await backfill_offline(part, on_event=on_event))
        if reports[-1].fatal_exit_code is not None:  # Redis down, interrupted: stop here
            break
    return combine_reports(reports) if reports else None


async def run_demo(
    symbols: tuple[str, ...] = DEMO_SYMBOLS, redis_url: str | None = None
) -> BackfillReport:
    """Backfill ``symbols`` × 5m, 15m, 1h, 4h, 1d from the emulator (embedded Redis by default)."""
    sink = BarSink(file=sys.stderr) if sys.stderr.isatty() else LogSink()
    config = BackfillConfig(symbols=symbols, redis_url=redis_url)
    return await backfill_offline(config, on_event=sink)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo and print the per-series table; exit with the gate's code."""
    parser = argparse.ArgumentParser(prog="python -m livermore_nb.demo", description=__doc__)
    parser.add_argument(
        "--redis-url", metavar="URL", help="write here instead of the embedded Redis ($REDIS_URL "
        "is ignored: the demo's synthetic candles must not reach a real cache)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    where = redact_url(args.redis_url) if args.redis_url is not None else "embedded Redis"
    print(f"livermore-nb demo: {len(DEMO_SYMBOLS)} symbols from the offline emulator → {where}")
    report = asyncio.run(run_demo(redis_url=args.redis_url))
    print(format_report(report))
    print(
        "\nData: " + ", ".join(RECORDED) + " are real Coinbase 1-minute candles (Nov–Dec 2023, "
        "time-shifted to now) for their newest ~32 days (XTZ-USD ~88); older candles and the other "
        f"{len(DEFAULT_SYNTHETIC)} products are a seeded synthetic walk from the emulator."
    )
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
