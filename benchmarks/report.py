"""Render benchmark rows as pipe tables and write ``benchmarks/README.md`` from one run."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def table(rows: Sequence[Row]) -> str:
    """A Markdown pipe table of ``rows`` (keys starting with ``_`` are internal and hidden)."""
    if not rows:
        return "(not run)"
    columns = [c for c in rows[0] if not c.startswith("_")]
    for row in rows[1:]:
        columns += [c for c in row if not c.startswith("_") and c not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    """One table cell; None as an em dash."""
    return "—" if value is None else str(value)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else the architecture."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {platform.machine()}"
    return platform.processor() or platform.machine()


@dataclass
class Results:
    """Everything one ``benchmarks.run`` produced, section by section."""

    command: str
    latency_ms: float
    redis: str
    sections: dict[str, tuple[str, list[Row], list[str]]] = field(default_factory=dict)
    """name → (title, rows, notes under the table)."""
    headline: str = ""

    def add(self, name: str, title: str, rows: list[Row], notes: Sequence[str] = ()) -> None:
        """Add (or replace) a section and print it at once."""
        self.sections[name] = (title, rows, list(notes))
        print(f"\n## {title}\n\n{table(rows)}", flush=True)
        for note in notes:
            print(f"\n{note}", flush=True)

    def machine(self) -> str:
        """Where the numbers were measured."""
        return (
            f"{os.cpu_count()} cores ({cpu_model()}), Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}; Redis: {self.redis}"
        )

    def markdown(self, preamble: str) -> str:
        """The whole README: preamble, headline, machine, command, then every section."""
        out = [preamble.strip(), ""]
        if self.headline:
            out += ["**Headline:** " + self.headline, ""]
        out += [
            f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
            f"{self.machine()}; emulator latency {self.latency_ms:g} ms.",
            "",
            "Command:",
            "",
            "```",
            self.command,
            "```",
        ]
        for title, rows, notes in self.sections.values():
            out += ["", f"## {title}", "", table(rows)]
            for note in notes:
                out += ["", note]
        return "\n".join(out) + "\n"
