"""The configuration file (``--config livermore.toml``): every backfill option, never a secret.

One flat TOML table whose keys are the backfill flags' names with underscores
(``min_candles = 150`` for ``--min-candles``, ``timeout = 10`` for
``--timeout``)::

    symbols = ["BTC-USD", "ETH-USD"]      # or "BTC-USD,ETH-USD"; or symbols_file = "symbols.txt"
    timeframes = "5m,15m,1h,4h,1d"
    candles = 300
    min_candles = 150
    include_open = false

Flags given on the command line override the file; ``--symbols`` or
``--symbols-file`` replaces both of the file's. A relative ``symbols_file`` is
read from the file's folder. Unknown keys, values of the wrong type, and
secrets (a key named like a password or private key, a URL carrying a
password) are a :class:`~livermore_nb.errors.ConfigError` naming them: secrets
come only from the environment. :func:`load_config` builds the same
:class:`~livermore_nb.backfill.BackfillConfig` for a notebook or a script.
"""

from __future__ import annotations

import argparse
import difflib
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .backfill import BackfillConfig
from .errors import ConfigError
from .store import redact_url

__all__ = ["SECRET_KEY", "load_config", "read_config"]

SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?$|secret|private_?key|token|api_?key|key_?name|credential", re.I
)
"""Key names that look like secrets; the file refuses them (secrets live in the environment)."""
LIST_OPTIONS = frozenset({"symbols", "timeframes"})
"""Options a TOML array may give (joined with commas, as on the command line)."""
NOT_IN_FILE = frozenset({"config", "help"})


def backfill_options() -> dict[str, argparse.Action]:
    """The backfill command's options by name (argparse ``dest``): the file's schema."""
    from .cli import add_backfill_options

    parser = argparse.ArgumentParser(add_help=False)
    add_backfill_options(parser)
    return {a.dest: a for a in parser._actions if a.dest not in NOT_IN_FILE}


def _unknown(names: list[str], known: Mapping[str, object], where: str) -> ConfigError:
    """A ConfigError naming every unknown key, with the closest known name where there is one."""
    parts = []
    for name in names:
        close = difflib.get_close_matches(name.replace("-", "_"), list(known), n=1)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ConfigError(f"unknown option(s) in {where}: {', '.join(parts)}")


def _check_secret(name: str, value: Any, where: str) -> None:
    """ConfigError when ``name`` or its value is a secret (which belongs in the environment)."""
    if SECRET_KEY.search(name):
        raise ConfigError(
            f"{where} must not hold secrets ({name!r}): set COINBASE_API_KEY_NAME, "
            "COINBASE_API_PRIVATE_KEY(_FILE) and REDIS_URL in the environment"
        )
    if isinstance(value, str) and name.endswith("_url") and redact_url(value) != value:
        raise ConfigError(
            f"{name} in {where} carries a password ({redact_url(value)}): "
            f"set {name.upper()} in the environment instead"
        )


def _checked(name: str, value: Any, action: argparse.Action, where: str) -> Any:
    """``value`` as the option's default, or ConfigError when its type does not fit."""
    if isinstance(value, list) and name in LIST_OPTIONS and all(isinstance(v, str) for v in value):
        value = ",".join(value)
    if action.nargs == 0:  # a switch such as --include-open
        ok = isinstance(value, bool)
        wanted = "true or false"
    elif action.type is int:
        ok, wanted = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif action.type is float:
        ok, wanted = isinstance(value, int | float) and not isinstance(value, bool), "a number"
        value = float(value) if ok else value
    elif action.type not in (None, str):  # a converter: argparse applies it to a text default
        ok, wanted = isinstance(value, str | int | float) and not isinstance(value, bool), "a value"
        value = str(value)
    else:
        ok, wanted = isinstance(value, str), "a string"
    if ok and action.choices is not None and value not in action.choices:
        ok, wanted = False, "one of " + ", ".join(map(repr, action.choices))
    if not ok:
        raise ConfigError(f"{name} in {where} must be {wanted}, got {value!r}")
    return value


def check_options(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validated option values (None dropped): secrets, unknown names and types are refused."""
    options = backfill_options()
    for name, value in values.items():
        _check_secret(name, value, where)
    unknown = [name for name in values if name not in options]
    if unknown:
        raise _unknown(unknown, options, where)
    return {
        name: _checked(name, value, options[name], where)
        for name, value in values.items()
        if value is not None
    }


def read_config(path: str | Path) -> dict[str, Any]:
    """The options of a ``livermore.toml`` file, checked (see the module docstring)."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            doc = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    values = check_options(doc, str(path))
    if "symbols" in values and "symbols_file" in values:
        raise ConfigError(f"{path} gives both symbols and symbols_file; keep one")
    if "symbols_file" in values:
        values["symbols_file"] = str(path.parent / Path(values["symbols_file"]).expanduser())
    return values


def merge_options(file_values: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The file's options under ``overrides``; overriding symbols drops both of the file's."""
    merged = dict(file_values)
    if {"symbols", "symbols_file"} & set(overrides):
        merged.pop("symbols", None)
        merged.pop("symbols_file", None)
    return {**merged, **overrides}


def load_config(path: str | Path | None = None, **overrides: Any) -> BackfillConfig:
    """The BackfillConfig of a ``livermore.toml`` (or none) with ``overrides`` on top.

    ``overrides`` take the file's names (``min_candles=200``, ``timeout=5``);
    None means "not given", so a notebook can pass its parameters as they are.
    """
    from .cli import add_backfill_options, config_from_args

    file_values = read_config(path) if path is not None else {}
    values = merge_options(file_values, check_options(overrides, "the overrides"))
    parser = argparse.ArgumentParser(add_help=False)
    add_backfill_options(parser)
    parser.set_defaults(**values)
    return config_from_args(parser.parse_args([]))
