"""``--help`` tells a new user every default, the exit codes, and what the emulator serves."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from livermore_nb import __version__
from livermore_nb.cli import build_parser
from livermore_nb.emulator import DEFAULT_SYNTHETIC

COMMANDS = ("backfill", "startup", "coverage", "products", "emulator")


def raw_help(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([command, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def help_of(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    return " ".join(raw_help(command, capsys).split())  # argparse wraps lines


def entry(text: str, flag: str) -> str:
    """The help entry of one option: its line in the options list and the wrapped lines after."""
    lines = text.split("options:", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"  {flag}[ ,]", line))
    rest = lines[start + 1 :]
    end = next((i for i, line in enumerate(rest) if re.match(r"  -", line) or not line), len(rest))
    return " ".join(" ".join([lines[start], *rest[:end]]).split())


def options(command: str) -> list[argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in sub.choices[command]._actions if a.option_strings and a.dest != "help"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_default_is_in_the_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = raw_help(command, capsys)
    for action in options(command):
        default = action.default
        if default is None or default is False or default == []:
            continue
        line = entry(text, action.option_strings[0])
        said = "%(default)" not in (action.help or "") and "default" in (action.help or "")
        value = r"\S+" if said else re.escape(str(default))  # e.g. "default: --four-hour"
        assert re.search(rf"default:? {value}", line), line


@pytest.mark.parametrize("command", ["backfill", "startup", "coverage"])
def test_exit_codes_are_in_the_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(command, capsys)
    for code, words in [("0", "every series"), ("2", "usage"), ("3", "short"), ("4", "Redis"),
                        ("5", "rejected")]:  # fmt: skip
        assert re.search(rf"\b{code} [^0-9]*{words}", text), code


def test_the_emulator_help_names_its_limits_and_products(capsys: pytest.CaptureFixture[str]):
    text = help_of("emulator", capsys)
    assert "at most --max-buckets buckets per request" in text and "Retry-After: 1" in text
    assert "most buckets per request, e.g. 350 (today) or 300 (older); default: 350" in text
    assert "default: 30" in text and "default: 10" in text  # private / public rate limits
    for product in ("BTC-USD", "XTZ-USD", *DEFAULT_SYNTHETIC, "SYN<digits>-USD"):
        assert product in text


def test_python_dash_m_runs_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "livermore_nb", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.strip() == f"livermore-nb {__version__}"
