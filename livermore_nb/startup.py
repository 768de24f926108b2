"""Headless startup: run ``backfill.ipynb`` with papermill, recover its exit code, gate a command.

The notebook is package data (``livermore_nb/notebooks/``; in a clone that is a
symlink to the repository's ``notebooks/``, so ``pip install -e .`` and a built
wheel find the same file). Parameters carry no secrets: the kernel inherits the
environment (``COINBASE_API_*``, and ``REDIS_URL`` set from ``--redis-url`` so a
password in the URL never lands in the executed notebook).

Exit code: the notebook writes the report JSON (with ``exit_code``) before its
last cell raises on a failed gate, so a run that got that far is exact; a run
that failed earlier (bad key, Redis down) is mapped by the exception's class
name through the error tree; anything else is :data:`EXIT_FAILURE`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from .backfill import BackfillConfig, BackfillReport
from .errors import EXIT_NOT_READY, CommandNotFound, ConfigError, LivermoreError

NOTEBOOK = "backfill.ipynb"
NOTEBOOK_PARAMETERS: tuple[str, ...] = (
    "symbols",
    "timeframes",
    "candles",
    "min_candles",
    "rate",
    "concurrency",
    "api_url",
    "key_template",
    "user_id",
    "exchange_id",
    "keep",
    "ttl",
    "include_open",
    "full",
    "page_size",
    "timeout_s",
    "deadline_s",
    "redis_timeout_s",
    "shared_rate",
    "lease_s",
    "state_prefix",
    "api_ttl",
)
"""BackfillConfig fields the notebook's ``parameters`` cell takes under the same names."""

EXIT_FAILURE = 1
"""The notebook failed for a reason outside the error tree (a bug, a dead kernel)."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def notebook_path(name: str = NOTEBOOK) -> Path:
    """The packaged notebook ``name``; ConfigError when the installation lacks it."""
    path = Path(str(resources.files("livermore_nb") / "notebooks" / name))
    if not path.is_file():
        raise ConfigError(f"notebook {name} is not installed at {path}")
    return path


def report_dict(report: BackfillReport) -> dict[str, Any]:
    """The report JSON of DESIGN.md plus ``exit_code``, so a reader needs no other channel."""
    return {**report.to_dict(), "exit_code": report.exit_code}


def write_private(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600, also if it existed).

    Reports and executed notebooks name hosts, series and errors: no one else's business.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fd, 0o600)
        fh.write(text)


def write_report(report: BackfillReport, path: str | Path | None) -> None:
    """Write the report JSON to ``path`` if one was given."""
    if path:
        write_private(path, json.dumps(report_dict(report), indent=2) + "\n")


def failure_report(error: str, exit_code: int | None) -> BackfillReport:
    """The report of a run that never got to its series (or has not finished yet)."""
    return BackfillReport(
        ready=False, duration_s=0.0, requests=0, retries=0, rate_limited=0, series=[],
        error=error, fatal_exit_code=exit_code,
    )  # fmt: skip


UNFINISHED = "the backfill has not finished (still running, or killed)"


def claim_report(path: str | Path | None) -> None:
    """Replace any old report at ``path`` with a not-ready one, before anything else runs.

    A stale ``"ready": true`` never outlives a run that fails, and a path that
    cannot be written is a ConfigError now, not after Redis was written.
    """
    if not path:
        return
    unfinished = {**report_dict(failure_report(UNFINISHED, None)), "exit_code": None}
    try:
        write_private(path, json.dumps(unfinished, indent=2) + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write the report {path}: {exc.strerror}") from None


def write_failure_report(path: str | Path, error: str, exit_code: int) -> None:
    """Record at ``path`` why the run stopped before its series, unless it already reported.

    Only the placeholder of :func:`claim_report` (or nothing) is replaced: a
    finished backfill's report stays, whatever fails after it.
    """
    existing = read_report(Path(path))
    if existing is not None and existing.get("exit_code") is not None:
        return
    with suppress(OSError):  # the error itself goes to stderr either way
        write_report(failure_report(error, exit_code), path)


def notebook_parameters(config: BackfillConfig, report_path: str | Path) -> dict[str, Any]:
    """The papermill parameters for ``config``: no secrets, no Redis URL, no emulator.

    ``config`` already holds a ``--config`` file's options under the flags, so no
    ``config_file`` is passed: read again in the kernel, the file's ``redis_url``
    would beat ``--redis-url``, which reaches the kernel only as ``$REDIS_URL``.
    """
    values = {name: getattr(config, name) for name in NOTEBOOK_PARAMETERS}
    values["symbols"] = ",".join(config.symbols)
    values["timeframes"] = ",".join(config.timeframes)
    options = {"config_file": None, "redis_url": None, "use_emulator": False}
    return {**values, **options, "report_path": str(report_path)}


def _error_classes(
    base: type[LivermoreError] = LivermoreError,
) -> dict[str, type[LivermoreError]]:
    """Every class in the error tree by name (NotReady included)."""
    found: dict[str, type[LivermoreError]] = {base.__name__: base}
    for sub in base.__subclasses__():
        found.update(_error_classes(sub))
    return found


def exit_code_for(ename: str) -> int:
    """The exit code of an exception the kernel raised, by class name."""
    cls = _error_classes().get(ename)
    return cls.exit_code if cls is not None else EXIT_FAILURE


def read_report(path: Path) -> dict[str, Any] | None:
    """The report JSON the notebook wrote, or None if it wrote none."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@contextmanager
def stop_on_signals() -> Iterator[asyncio.Event]:
    """An event that SIGINT or SIGTERM sets while the block runs (on the running loop).

    Pass it as ``backfill(..., stop=...)``: the run then ends cleanly (written
    series stay whole, a report says what was left) instead of dying mid-write.
    The CLI and the backfill notebook's kernel both use it.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


@contextmanager
def forwarding_signals_to_children() -> Iterator[list[int]]:
    """While the block runs, pass SIGINT/SIGTERM on to our child processes as SIGINT.

    The kernel papermill starts is one of them, in its own session, so neither a
    Ctrl-C on the terminal nor a ``docker stop`` reached it. SIGINT is what the
    backfill cell turns into a clean stop (and what ipykernel treats as an
    interrupt between cells). Yields the list of signals received so far.
    """
    import psutil

    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        for child in psutil.Process().children():
            with suppress(psutil.Error):
                child.send_signal(signal.SIGINT)

    previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _execute(config: BackfillConfig, output: Path, report_path: Path, progress: bool) -> str | None:
    """Run the notebook with papermill; why it failed (None when every cell ran)."""
    import papermill as pm  # imported lazily: it is slow and only startup needs it

    try:
        pm.execute_notebook(
            str(notebook_path()),
            str(output),
            parameters=notebook_parameters(config, report_path),
            kernel_name="python3",
            progress_bar=progress,
        )
    except pm.PapermillExecutionError as exc:
        return f"{exc.ename}: {exc.evalue}"
    except Exception as exc:  # a dead kernel, a timeout: say so instead of a traceback
        return f"the notebook did not run to the end ({type(exc).__name__}: {exc})"
    return None


def run_backfill_notebook(
    config: BackfillConfig, *, output: Path, report_path: Path, progress: bool = False
) -> int:
    """Execute the backfill notebook into ``output``; the backfill's exit code.

    papermill runs in a worker thread so that this (main) thread keeps the
    signal handlers: a SIGINT or SIGTERM is passed to the kernel, whose backfill
    then stops cleanly and writes its report; we wait for that. Whatever happens,
    ``report_path`` holds a report afterwards (the kernel's, or one saying why
    there is none) and ``output`` is readable by its owner only.
    """
    if config.redis_url:
        os.environ["REDIS_URL"] = config.redis_url
    claim_report(report_path)
    write_private(output, "")  # papermill rewrites it in place: the mode stays 0600
    outcome: list[str | None] = []
    worker = threading.Thread(
        target=lambda: outcome.append(_execute(config, output, report_path, progress)),
        name="papermill",
        daemon=True,
    )
    with forwarding_signals_to_children() as received:
        worker.start()
        while worker.is_alive():
            worker.join(0.2)  # wakes up for signals, which run here, in the main thread
    with suppress(OSError):
        output.chmod(0o600)
    report = read_report(report_path)
    if report is not None and report.get("exit_code") is not None:
        return int(report["exit_code"])
    reason = outcome[0] if outcome else "the notebook thread ended without a result"
    if received:
        reason = f"interrupted (signal {received[0]}) before the backfill reported"
        code = EXIT_NOT_READY
    elif reason is None:
        reason, code = "the notebook ran but wrote no report", EXIT_FAILURE
    else:
        code = exit_code_for(reason.split(":", 1)[0])
    write_failure_report(report_path, reason, code)
    return code


def exec_command(command: Sequence[str]) -> NoReturn:
    """Replace this process with ``command`` (its signals and exit code are its own)."""
    try:
        os.execvp(command[0], list(command))
    except OSError as exc:
        raise CommandNotFound(f"cannot run {command[0]!r}: {exc.strerror}") from None
