"""The ``livermore-nb`` command: parses options, builds configs, calls the library.

Exit codes (DESIGN.md): 0 ready; 2 usage or configuration error; 3 some series
short or failed; 4 Redis unreachable or refusing the credentials (the message
says which); 5 Coinbase rejected the key. Each
:class:`~livermore_nb.errors.LivermoreError` carries its own code. ``startup``
exits with the backfill's code, or becomes COMMAND when the gate lets it run
(127 if COMMAND cannot be executed).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import math
import os
import signal
import sys
import tempfile
import textwrap
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import (
    EXIT_AUTH,
    EXIT_COMMAND_NOT_FOUND,
    EXIT_NOT_READY,
    EXIT_OK,
    EXIT_REDIS,
    EXIT_USAGE,
    ConfigError,
    LivermoreError,
)
from .timeframes import DEFAULT_TIMEFRAMES

if TYPE_CHECKING:
    from .backfill import BackfillConfig, BackfillReport, PlanView

# pandas, aiohttp and redis take ~2 s to import: modules that need them are imported inside
# the functions, so that main() is already running (and catches a Ctrl-C) while they load.

SECRETS_NOTE = (
    "Secrets come only from the environment: COINBASE_API_KEY_NAME with "
    "COINBASE_API_PRIVATE_KEY or COINBASE_API_PRIVATE_KEY_FILE (no key: public endpoint)."
)

EXIT_CODES_NOTE = f"""exit codes:
  {EXIT_OK}    every series reached --min-candles (coverage --check: none short or stale)
  {EXIT_USAGE}    usage or configuration error: nothing was sent or written
  {EXIT_NOT_READY}    some series short or failed, or the run was interrupted (SIGINT/SIGTERM);
       coverage --check: a series is short or stale, or nothing is cached
  {EXIT_REDIS}    Redis unreachable
  {EXIT_AUTH}    Coinbase rejected the API key
  {EXIT_COMMAND_NOT_FOUND}  startup: COMMAND cannot be executed"""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help, also where it has no help text; epilogs as written.

    Nothing is added where the help already names the default, where there is
    none (None), or for an off switch and an empty repeatable option.
    """

    def _format_action(self, action: argparse.Action) -> str:
        """Format ``action``, giving a help line to an option that has a default but no help."""
        if action.help is None and action.option_strings and self._shows_default(action):
            action = copy.copy(action)
            action.help = "default: %(default)s"
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        """The help with ``(default: …)`` appended where a default exists and is not yet named."""
        if not self._shows_default(action) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)

    @staticmethod
    def _shows_default(action: argparse.Action) -> bool:
        """True when the default says something (not None, an off switch, or empty)."""
        default = action.default
        return not (
            default is None or default is False or default == [] or default == argparse.SUPPRESS
        )


def emulator_note() -> str:
    """The emulator's limits and products, for ``livermore-nb emulator --help``."""
    from .emulator.config import DEFAULT_CONFIG as EMULATOR_DEFAULTS
    from .emulator.config import DEFAULT_SYNTHETIC, recorded_files

    defaults = EMULATOR_DEFAULTS  # (no Emulator built: the server would load numpy and pandas)
    recorded = [p for p in recorded_files(defaults.data_path()) if p not in DEFAULT_SYNTHETIC]
    limits = (
        f"limits, as Coinbase's: at most --max-buckets buckets per request (HTTP 400 beyond); "
        f"429 with Retry-After: {defaults.retry_after_s:g} past --rate-limit (per key) or "
        f"--public-rate-limit (per IP); JWTs live at most {defaults.jwt_max_lifetime_s:g} s, "
        f"{defaults.jwt_leeway_s:g} s clock leeway."
    )
    products = (
        f"products: {', '.join(recorded)} recorded (real 1-minute candles, shifted so the newest "
        f"is now); {', '.join(DEFAULT_SYNTHETIC)} synthetic; any SYN<digits>-USD on demand. "
        "Listed at GET /api/v3/brokerage/market/products."
    )
    return "\n\n".join(textwrap.fill(text, 79) for text in (limits, products))


def read_symbols_file(path: str) -> str:
    """Symbols from a file: one per line or comma-separated, ``#`` starts a comment."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is fine
    except OSError as exc:
        raise ConfigError(f"cannot read symbols file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"symbols file {path} is not UTF-8 text (byte {exc.start})") from None
    symbols = ",".join(line.split("#", 1)[0] for line in text.splitlines())
    if not symbols.replace(",", "").strip():
        raise ConfigError(f"symbols file {path} lists no symbols")
    return symbols


def add_series_options(parser: argparse.ArgumentParser, *, listing: bool = False) -> None:
    """--symbols/--symbols-file, --timeframes and --redis-url (shared by most commands).

    ``listing``: no symbols means every cached series, no timeframes all cached ones.
    """
    from .store import DEFAULT_KEY_TEMPLATE

    group = parser.add_mutually_exclusive_group()
    group.add_argument("--symbols", help="comma-separated product ids, e.g. BTC-USD,ETH-USD")
    group.add_argument("--symbols-file", metavar="FILE", help="file of product ids")
    five = ",".join(DEFAULT_TIMEFRAMES)
    parser.add_argument(
        "--timeframes",
        default=None if listing else five,
        help=f"default: every cached one (with --symbols: {five})"
        if listing
        else "timeframes to fill; default: %(default)s",
    )
    parser.add_argument(
        "--redis-url", metavar="URL", help="default: $REDIS_URL, else an embedded Redis"
    )
    parser.add_argument(
        "--key-template", default=DEFAULT_KEY_TEMPLATE, help="Redis key of each series"
    )
    parser.add_argument("--user-id", type=int, default=1, help="{user_id} in the key template")
    parser.add_argument(
        "--exchange-id", type=int, default=1, help="{exchange_id} in the key template"
    )


def add_backfill_options(parser: argparse.ArgumentParser) -> None:
    """Every option of ``backfill`` (``startup`` takes the same)."""
    from .backfill import BackfillConfig
    from .budget import SHARED_RATE_MODES

    add_series_options(parser)
    defaults = BackfillConfig(symbols=("BTC-USD",))
    parser.add_argument(
        "--candles", type=int, default=defaults.candles, help="default: %(default)s"
    )
    parser.add_argument(
        "--min-candles", type=int, default=defaults.min_candles, help="gate; default: %(default)s"
    )
    parser.add_argument("--rate", type=float, help="requests/s; default 25 with a key, 8 without")
    parser.add_argument(
        "--concurrency", type=int, default=defaults.concurrency, help="series fetched at once"
    )
    parser.add_argument("--api-url", metavar="URL", help="default: $COINBASE_API_URL or Coinbase")
    parser.add_argument(
        "--keep", type=int, default=defaults.keep, help="newest members kept per series, 0 = all"
    )
    parser.add_argument(
        "--ttl", type=int, default=defaults.ttl, help="seconds, 0 = none; default: %(default)s"
    )
    parser.add_argument("--include-open", action="store_true", help="also write the open candle")
    parser.add_argument("--full", action="store_true", help="refetch series already in Redis")
    parser.add_argument(
        "--page-size", type=int, default=defaults.page_size,
        help="buckets per request, ≤ 350 (None: the most the API accepts, learnt)",
    )  # fmt: skip
    parser.add_argument(
        "--state-prefix", default=defaults.state_prefix,
        help="Redis prefix of the learnt API capabilities and history starts",
    )  # fmt: skip
    parser.add_argument(
        "--api-ttl",
        type=int,
        default=defaults.api_ttl,
        help="seconds learnt API capabilities are trusted (0 = not kept)",
    )
    parser.add_argument("--timeout", type=float, default=defaults.timeout_s, help="per request, s")
    parser.add_argument(
        "--shared-rate",
        choices=SHARED_RATE_MODES,
        default=defaults.shared_rate,
        help="share the key's rate budget, 429 pauses and series leases with every process "
        "on this Redis; auto = on when a Redis URL is set (default: %(default)s)",
    )
    parser.add_argument(
        "--lease",
        type=float,
        default=defaults.lease_s,
        metavar="SECONDS",
        help="series lease; a dead replica's series are taken over after it (default: %(default)s)",
    )
    parser.add_argument(
        "--deadline", type=float, default=defaults.deadline_s,
        help="time budget of the whole run, s (0 = none; at the deadline: exit 3)",
    )  # fmt: skip
    parser.add_argument(
        "--redis-timeout", type=float, default=defaults.redis_timeout_s,
        help="longest wait for one Redis reply, s (a hung Redis: exit 4)",
    )  # fmt: skip
    parser.add_argument("--report", metavar="FILE.json", help="write the report JSON here")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="progress events as text lines or one JSON object per line",
    )
    parser.add_argument(
        "--config",
        metavar="FILE.toml",
        help="options from a TOML file (names as these flags, with underscores); flags win",
    )


def symbols_from_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The symbols of --symbols or --symbols-file (ConfigError when neither is given)."""
    from .backfill import parse_symbols

    if args.symbols_file:
        return parse_symbols(read_symbols_file(args.symbols_file))
    if args.symbols:
        return parse_symbols(args.symbols)
    raise ConfigError("give --symbols or --symbols-file")


def config_from_args(args: argparse.Namespace) -> BackfillConfig:
    """Build the BackfillConfig the options describe (ConfigError when they are invalid)."""
    from .backfill import BackfillConfig

    numbers = [("--rate", args.rate), ("--timeout", args.timeout)]
    for flag, value in [*numbers, ("--redis-timeout", args.redis_timeout)]:
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"{flag} must be a finite number, got {value}")
    return BackfillConfig(
        symbols=symbols_from_args(args),
        timeframes=args.timeframes,
        candles=args.candles,
        min_candles=args.min_candles,
        rate=args.rate,
        concurrency=args.concurrency,
        redis_url=args.redis_url,
        api_url=args.api_url,
        key_template=args.key_template,
        user_id=args.user_id,
        exchange_id=args.exchange_id,
        keep=args.keep,
        ttl=args.ttl,
        include_open=args.include_open,
        full=args.full,
        page_size=args.page_size,
        timeout_s=args.timeout,
        shared_rate=args.shared_rate,
        lease_s=args.lease,
        state_prefix=args.state_prefix,
        api_ttl=args.api_ttl,
        deadline_s=args.deadline,
        redis_timeout_s=args.redis_timeout,
    )


def text_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as right-aligned columns under their keys, ``—`` for None.

    pandas' ``to_string`` would do, but importing pandas costs every backfill
    process ~0.4 s of CPU (several replicas start together on a small machine).
    """
    if not rows:
        return "(no series)"
    columns = list(rows[0])
    cells = [["—" if row[c] is None else str(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = [columns, *cells]
    return "\n".join(
        " ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) for line in lines
    )


def format_report(report: BackfillReport) -> str:
    """The per-series table and a one-line verdict, for people."""
    table = text_table(report.to_dict()["series"])
    line = report.verdict()
    return f"{table}\n{line}" + (f"\nstopped early: {report.error}" if report.error else "")


async def run_with_signals(config: BackfillConfig, sink: Any) -> BackfillReport:
    """Run a backfill; SIGINT/SIGTERM stop it cleanly (written series stay)."""
    from .backfill import backfill
    from .startup import stop_on_signals

    with stop_on_signals() as stop:
        return await backfill(config, on_event=sink, stop=stop)


def cmd_backfill(args: argparse.Namespace) -> int:
    """``livermore-nb backfill``: fill Redis, print the table, exit with the gate's code."""
    from .progress import BarSink, LogSink, fan_out
    from .startup import claim_report, write_report

    claim_report(args.report)  # before Redis is touched: fail now if it cannot be written
    config = config_from_args(args)
    log_sink = LogSink(args.log_format)
    sink = fan_out(BarSink(file=sys.stderr), log_sink) if sys.stderr.isatty() else log_sink
    report = asyncio.run(run_with_signals(config, sink))
    write_report(report, args.report)
    if args.log_format == "json":
        print(json.dumps(report.to_dict()))
    else:
        print(format_report(report))
    if report.error:
        print(f"livermore-nb: error: {report.error}", file=sys.stderr)
    return report.exit_code


def format_plan(view: PlanView) -> str:
    """The plan per series and its total, for people."""
    import pandas as pd

    frame = pd.DataFrame(view.rows())
    table = frame.fillna("—").to_string(index=False) if len(frame) else "(no series)"
    api = view.api
    four_hour = {True: "served", False: "not served", None: "not learnt yet (assumed served)"}
    most = api["max_buckets"] or "not learnt yet (assumed 350)"
    return (
        f"{table}\n{view.requests} requests planned, at least {view.seconds:.1f} s at "
        f"{view.rate:g} req/s (pages of {view.page_buckets} buckets; FOUR_HOUR "
        f"{four_hour[api['four_hour']]}; most buckets per request: {most}); "
        "illiquid products may need pages further back"
    )


def cmd_plan(args: argparse.Namespace) -> int:
    """``livermore-nb plan``: what a backfill would send now, per series, without sending it."""
    from .backfill import plan_view

    view = asyncio.run(plan_view(config_from_args(args)))
    if args.log_format == "json":
        doc: dict[str, Any] = {"requests": view.requests, "seconds": round(view.seconds, 3)}
        doc["rate"] = view.rate
        doc |= {"page_buckets": view.page_buckets, "api": view.api, "series": view.rows()}
        print(json.dumps(doc))
    else:
        print(format_plan(view))
    return EXIT_OK


def add_emulator_options(parser: argparse.ArgumentParser) -> None:
    """Options of ``emulator``: where it listens, its data, limits and faults."""
    from .emulator.config import DEFAULT_CONFIG as EMULATOR_DEFAULTS

    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--data", metavar="DIR", help="recorded {PRODUCT}.csv.gz files")
    parser.add_argument("--rate-limit", type=float, default=30, help="private, per key, req/s")
    parser.add_argument("--public-rate-limit", type=float, default=10, help="per IP, req/s")
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--error-rate", type=float, default=0, help="share of 5xx answers")
    parser.add_argument("--timeout-rate", type=float, default=0, help="share of stalled answers")
    parser.add_argument("--malformed-rate", type=float, default=0, help="share of broken bodies")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--four-hour",
        action=argparse.BooleanOptionalAction,
        default=EMULATOR_DEFAULTS.four_hour,
        help="serve the FOUR_HOUR granularity (today's API) or not (the older one); default: "
        + ("--four-hour" if EMULATOR_DEFAULTS.four_hour else "--no-four-hour"),
    )
    parser.add_argument(
        "--max-buckets",
        type=int,
        default=EMULATOR_DEFAULTS.max_buckets,
        metavar="N",
        help="most buckets per request, e.g. 350 (today) or 300 (older); default: %(default)s",
    )
    parser.add_argument(
        "--extend-history",
        action="store_true",
        help="serve a labelled synthetic walk before the recorded data (for 300 daily candles)",
    )
    parser.add_argument(
        "--key-file",
        action="append",
        default=[],
        metavar="FILE",
        help="CDP key JSON whose key the private endpoint accepts (repeatable)",
    )


def cmd_emulator(args: argparse.Namespace) -> int:
    """``livermore-nb emulator``: serve the local Coinbase candles API until stopped."""
    from .emulator import EmulatorConfig, load_public_keys, serve

    keys: dict[str, Any] = {}
    for path in args.key_file:
        keys.update(load_public_keys(path))
    rates = {"error_rate": args.error_rate, "timeout_rate": args.timeout_rate}
    rates["malformed_rate"] = args.malformed_rate
    if not all(0 <= rate <= 1 for rate in rates.values()):
        raise ConfigError("fault rates must be between 0 and 1")
    config = EmulatorConfig(
        data_dir=Path(args.data) if args.data else None,
        rate_limit_private=args.rate_limit,
        rate_limit_public=args.public_rate_limit,
        latency_ms=args.latency_ms,
        seed=args.seed,
        extend_history=args.extend_history,
        four_hour=args.four_hour,
        max_buckets=args.max_buckets,
        keys=keys,
        **rates,
    )
    serve(config, args.host, args.port)
    return 0


def add_startup_options(parser: argparse.ArgumentParser) -> None:
    """Options of ``startup``: the backfill's, the executed notebook, the gate, COMMAND."""
    add_backfill_options(parser)
    parser.add_argument(
        "--output-notebook", metavar="PATH", help="executed notebook; default: a temp file"
    )
    parser.add_argument(
        "--allow-partial", action="store_true", help="also run COMMAND when some series are short"
    )
    parser.add_argument("run", nargs="*", metavar="-- COMMAND", help="run when the gate passes")


def explain_failure(report: dict[str, Any] | None) -> list[str]:
    """Lines for stderr saying why a run is not ready: its error and the series it failed."""
    if not report or report.get("ready"):
        return []
    lines = [f"livermore-nb: error: {report['error']}"] if report.get("error") else []
    bad = [s for s in report.get("series", []) if s.get("status") != "ready"]
    lines += [f"  {s['symbol']} {s['timeframe']}: {s['status']} ({s['error']})" for s in bad[:20]]
    return lines + ([f"  … and {len(bad) - 20} more"] if len(bad) > 20 else [])


def cmd_startup(args: argparse.Namespace) -> int:
    """``livermore-nb startup``: run backfill.ipynb headlessly, then COMMAND if the gate allows."""
    from .startup import claim_report, exec_command, read_report, run_backfill_notebook

    claim_report(args.report)  # before anything else: fail now if it cannot be written
    config = config_from_args(args)
    if args.output_notebook:
        output = Path(args.output_notebook)
    else:
        fd, name = tempfile.mkstemp(prefix="livermore-nb-startup-", suffix=".ipynb")
        os.close(fd)
        output = Path(name)
    with tempfile.TemporaryDirectory(prefix="livermore-nb-") as tmp:
        report_path = Path(args.report or Path(tmp) / "report.json")
        try:
            code = run_backfill_notebook(
                config, output=output, report_path=report_path, progress=sys.stderr.isatty()
            )
        except OSError as exc:
            raise ConfigError(f"cannot write the notebook {output}: {exc.strerror}") from None
        report = read_report(report_path)
    statuses = Counter(s["status"] for s in report["series"]) if report else Counter()
    summary = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    print(f"startup: exit {code} ({summary or 'no series'}); notebook: {output}", file=sys.stderr)
    for line in explain_failure(report):
        print(line, file=sys.stderr)
    gate_open = code == EXIT_OK or (code == EXIT_NOT_READY and args.allow_partial)
    if args.run and gate_open:
        exec_command(args.run)
    return code


def add_coverage_options(parser: argparse.ArgumentParser) -> None:
    """Options of ``coverage``: the series, the target, the health check and the output format."""
    add_series_options(parser, listing=True)
    from .backfill import BackfillConfig

    defaults = BackfillConfig(symbols=("BTC-USD",))
    parser.add_argument("--target", type=int, default=300, help="candles wanted per series")
    parser.add_argument(
        "--stale-periods", type=float, default=2.0, help="stale after this many closed periods"
    )
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 3 when a series is short (< --min-candles), stale, or nothing is cached",
    )
    parser.add_argument(
        "--min-candles", type=int, default=defaults.min_candles, help="--check's gate"
    )


def check_coverage(frame: Any, min_candles: int) -> int:
    """``coverage --check``: one stderr line per failing series; exit 3 if any, else 0."""
    from .coverage import check_problems

    problems = check_problems(frame, min_candles) if len(frame) else ["no series cached"]
    for problem in problems:
        print(f"check: {problem}", file=sys.stderr)
    verdict = f"{len(problems)} problem(s)" if problems else "ok"
    print(f"check: {verdict} in {len(frame)} series", file=sys.stderr)
    return EXIT_NOT_READY if problems else EXIT_OK


def cmd_coverage(args: argparse.Namespace) -> int:
    """``livermore-nb coverage``: print what Redis holds per series (all cached ones by default)."""
    from .coverage import coverage, readable, serializable

    listing = not (args.symbols or args.symbols_file)
    frame = coverage(
        args.redis_url,
        None if listing else symbols_from_args(args),
        args.timeframes,
        key_template=args.key_template,
        user_id=args.user_id,
        exchange_id=args.exchange_id,
        target=args.target,
        stale_periods=args.stale_periods,
    )
    if args.format == "json":
        print(serializable(frame).to_json(orient="records", indent=2))
    elif args.format == "csv":
        print(serializable(frame).to_csv(index=False), end="")
    elif len(frame):
        print(readable(frame).to_string(index=False, na_rep="—"))
    else:
        print("(no series)")
    return check_coverage(frame, args.min_candles) if args.check else EXIT_OK


def add_products_options(parser: argparse.ArgumentParser) -> None:
    """Options of ``products``: where to ask, which quote currency, the output format."""
    parser.add_argument("--api-url", metavar="URL", help="default: $COINBASE_API_URL or Coinbase")
    parser.add_argument("--quote", metavar="CURRENCY", help="only products quoted in it, e.g. USD")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds")


def cmd_products(args: argparse.Namespace) -> int:
    """``livermore-nb products``: list the products the API serves (one public request)."""
    import dataclasses

    import pandas as pd

    from .backfill import PUBLIC_RATE
    from .coinbase import DEFAULT_API_URL
    from .products import Product, fetch_products

    api_url = args.api_url or os.environ.get("COINBASE_API_URL") or DEFAULT_API_URL
    listed = asyncio.run(fetch_products(api_url, rate=PUBLIC_RATE, timeout_s=args.timeout))
    rows = [dataclasses.asdict(p) for p in listed if args.quote in (None, p.quote)]
    frame = pd.DataFrame(rows, columns=[f.name for f in dataclasses.fields(Product)])
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif args.format == "csv":
        print(frame.to_csv(index=False), end="")
    else:
        print(frame.to_string(index=False) if rows else "(no products)")
        print(f"{len(rows)} products at {api_url}", file=sys.stderr)
    return EXIT_OK


def apply_config_file(args: argparse.Namespace, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse again with ``--config``'s values as defaults, so the flags given override them."""
    if not getattr(args, "config", None):
        return args
    from .config import merge_options, read_config

    given = {k: v for k in ("symbols", "symbols_file") if (v := getattr(args, k))}
    return build_parser(merge_options(read_config(args.config), given)).parse_args(argv)


def build_parser(config_defaults: Mapping[str, Any] | None = None) -> argparse.ArgumentParser:
    """The argument parser with every subcommand attached (backfill options from a config file)."""
    notes = f"{EXIT_CODES_NOTE}\n\n{textwrap.fill(SECRETS_NOTE, 79)}"
    parser = argparse.ArgumentParser(
        prog="livermore-nb",
        description="Warm a Redis candle cache from Coinbase and gate startup on it.",
        epilog=notes,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    backfill_parser = sub.add_parser(
        "backfill", help="fetch candle history into Redis", epilog=notes,
        formatter_class=HelpFormatter,
    )  # fmt: skip
    add_backfill_options(backfill_parser)
    backfill_parser.set_defaults(func=cmd_backfill, **(config_defaults or {}))
    plan_parser = sub.add_parser(
        "plan", help="what a backfill would send, per series and in all", epilog=notes,
        formatter_class=HelpFormatter,
    )  # fmt: skip
    add_backfill_options(plan_parser)
    plan_parser.set_defaults(func=cmd_plan, **(config_defaults or {}))
    startup_parser = sub.add_parser(
        "startup",
        help="run the backfill notebook headlessly, then COMMAND if the cache is ready",
        epilog=notes,
        formatter_class=HelpFormatter,
    )
    add_startup_options(startup_parser)
    startup_parser.set_defaults(func=cmd_startup, **(config_defaults or {}))
    coverage_parser = sub.add_parser(
        "coverage", help="what Redis holds per series (every cached one by default)",
        epilog=EXIT_CODES_NOTE, formatter_class=HelpFormatter,
    )  # fmt: skip
    add_coverage_options(coverage_parser)
    coverage_parser.set_defaults(func=cmd_coverage)
    products_parser = sub.add_parser(
        "products", help="list the products the API serves", formatter_class=HelpFormatter
    )
    add_products_options(products_parser)
    products_parser.set_defaults(func=cmd_products)
    emulator_parser = sub.add_parser(
        "emulator", help="serve a local Coinbase candles API", epilog=emulator_note(),
        formatter_class=HelpFormatter,
    )  # fmt: skip
    add_emulator_options(emulator_parser)
    emulator_parser.set_defaults(func=cmd_emulator)
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Run the chosen subcommand; on an error, also record it in ``--report`` if one was named."""
    try:
        return int(args.func(args))
    except LivermoreError as exc:
        report = getattr(args, "report", None)
        if report and args.command in ("backfill", "startup"):
            from .startup import write_failure_report

            write_failure_report(report, str(exc), exc.exit_code)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run a subcommand and map errors to exit codes, one line each.

    A Ctrl-C at any point, even while the modules load, ends in one line and 130.
    """
    try:
        args = build_parser().parse_args(argv)
        return run_command(apply_config_file(args, argv))
    except LivermoreError as exc:
        print(f"livermore-nb: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("livermore-nb: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
