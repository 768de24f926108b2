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

import json
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from .backfill import BackfillConfig, BackfillReport
from .errors import CommandNotFound, ConfigError, LivermoreError

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
)
"""BackfillConfig fields the notebook's ``parameters`` cell takes under the same names."""

EXIT_FAILURE = 1
"""The notebook failed for a reason outside the error tree (a bug, a dead kernel)."""


def notebook_path(name: str = NOTEBOOK) -> Path:
    """The packaged notebook ``name``; ConfigError when the installation lacks it."""
    path = Path(str(resources.files("livermore_nb") / "notebooks" / name))
    if not path.is_file():
        raise ConfigError(f"notebook {name} is not installed at {path}")
    return path


def report_dict(report: BackfillReport) -> dict[str, Any]:
    """The report JSON of DESIGN.md plus ``exit_code``, so a reader needs no other channel."""
    return {**report.to_dict(), "exit_code": report.exit_code}


def write_report(report: BackfillReport, path: str | Path | None) -> None:
    """Write the report JSON to ``path`` if one was given."""
    if path:
        Path(path).write_text(json.dumps(report_dict(report), indent=2) + "\n")


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


def run_backfill_notebook(
    config: BackfillConfig, *, output: Path, report_path: Path, progress: bool = False
) -> int:
    """Execute the backfill notebook into ``output``; the backfill's exit code."""
    import papermill as pm  # imported lazily: it is slow and only startup needs it

    if config.redis_url:
        os.environ["REDIS_URL"] = config.redis_url
    report_path.unlink(missing_ok=True)
    try:
        pm.execute_notebook(
            str(notebook_path()),
            str(output),
            parameters=notebook_parameters(config, report_path),
            kernel_name="python3",
            progress_bar=progress,
        )
    except pm.PapermillExecutionError as exc:
        report = read_report(report_path)
        return int(report["exit_code"]) if report else exit_code_for(exc.ename)
    report = read_report(report_path)
    return int(report["exit_code"]) if report else EXIT_FAILURE


def exec_command(command: Sequence[str]) -> NoReturn:
    """Replace this process with ``command`` (its signals and exit code are its own)."""
    try:
        os.execvp(command[0], list(command))
    except OSError as exc:
        raise CommandNotFound(f"cannot run {command[0]!r}: {exc.strerror}") from None
