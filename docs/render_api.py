"""Render docs/api.md from the package's docstrings: ``python docs/render_api.py docs/api.md``.

Attribute docstrings (a string right after a field or constant) are read from
the source with :mod:`ast`; everything else comes from the objects themselves,
so the page cannot say what the code does not. ``tests/test_api_docs.py``
fails when the committed page differs from what this renders.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import itertools
import re
import sys
from pathlib import Path
from typing import Any

from livermore_nb.backfill import BackfillConfig, BackfillReport, SeriesResult

# the package exports functions named like these modules: take the modules themselves
backfill, config, coverage, errors, macdv = (
    importlib.import_module(f"livermore_nb.{name}")
    for name in ("backfill", "config", "coverage", "errors", "macdv")
)

HEADER = """# API reference

Generated from the docstrings by [`docs/render_api.py`](render_api.py) (`make api-docs`);
`tests/test_api_docs.py` fails when this page is not current. Do not edit it by hand.
"""


def attribute_docs(module: Any, owner: str | None = None) -> dict[str, str]:
    """Docstrings written right after assignments, in ``module`` or in its class ``owner``."""
    tree = ast.parse(inspect.getsource(module))
    body = tree.body
    if owner is not None:
        body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == owner).body
    docs = {}
    for node, after in itertools.pairwise(body):
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        is_doc = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
        if isinstance(target, ast.Name) and is_doc and isinstance(after.value.value, str):
            docs[target.id] = inspect.cleandoc(after.value.value)
    return docs


def rst(text: str) -> str:
    """Docstring markup as Markdown: ``code`` → `code`, :func:`x` → `x`."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("::\n", ":\n").replace("``", "`")


def cell(text: str) -> str:
    """One Markdown table cell: one line, pipes escaped."""
    return rst(" ".join(text.split())).replace("|", "\\|")


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def option_help(action: Any) -> str:
    """A flag's help without its ``default: …`` part (the table has a default column)."""
    text = re.sub(r"[;,]?\s*default:? %\(default\)s", "", action.help or "")
    return text.strip(" ;,")


def config_section() -> str:
    """BackfillConfig: every field, its default, its flag and TOML key, and what it means."""
    docs = attribute_docs(backfill, "BackfillConfig")
    options = config.backfill_options()
    rows = []
    for field in dataclasses.fields(BackfillConfig):
        name = next((d for d in options if field.name in (d, f"{d}_s")), None)
        if field.default is not dataclasses.MISSING:
            default = f"`{field.default!r}`"
        elif field.default_factory is not dataclasses.MISSING:
            default = f"`{type(field.default_factory()).__name__}()`"
        else:
            default = "(required)"
        flag = f"`--{name.replace('_', '-')}` / `{name}`" if name else "(Python only)"
        meaning = docs.get(field.name) or (option_help(options[name]) if name else "")
        rows.append([f"`{field.name}`", f"`{field.type}`", default, flag, meaning])
    extra = [
        [f"`--{d.replace('_', '-')}` / `{d}`", option_help(a)]
        for d, a in options.items()
        if not any(f.name in (d, f"{d}_s") for f in dataclasses.fields(BackfillConfig))
    ]
    return "\n\n".join(
        [
            "## `BackfillConfig`",
            rst(inspect.getdoc(BackfillConfig) or ""),
            table(["field", "type", "default", "flag / TOML key", "meaning"], rows),
            "Options of the command (and the TOML file) that are not config fields:",
            table(["flag / TOML key", "meaning"], extra),
            "### The configuration file",
            rst(inspect.getdoc(config) or ""),
        ]
    )


def report_section() -> str:
    """The report JSON: its top-level keys and one series entry, with units."""
    sample = BackfillReport(
        ready=True, duration_s=0, requests=0, retries=0, rate_limited=0,
        series=[SeriesResult("BTC-USD", "1h")],
    )  # fmt: skip
    report_docs = attribute_docs(backfill, "BackfillReport")
    exit_doc = inspect.getdoc(BackfillReport.exit_code) or ""
    types = {f.name: f.type for f in dataclasses.fields(BackfillReport)}
    for name, prop in vars(BackfillReport).items():  # computed keys, e.g. from_peer
        if isinstance(prop, property) and name != "exit_code":
            types[name] = inspect.signature(prop.fget).return_annotation
            report_docs.setdefault(name, (inspect.getdoc(prop) or "").replace("\n", " "))
    rows = [[f"`{k}`", f"`{types[k]}`", report_docs.get(k, "")] for k in sample.to_dict()]
    rows.append(["`exit_code`", "`int`", f"Only in the file `--report` writes: {exit_doc}"])
    series_docs = attribute_docs(backfill, "SeriesResult")
    series_types = {f.name: f.type for f in dataclasses.fields(SeriesResult)}
    series = [
        [f"`{k}`", f"`{series_types[k]}`", series_docs.get(k, "")]
        for k in sample.to_dict()["series"][0]
    ]
    return "\n\n".join(
        [
            "## The report (`BackfillReport.to_dict()`, `--report FILE.json`)",
            rst(inspect.getdoc(BackfillReport) or ""),
            table(["key", "type", "meaning"], rows),
            "Each entry of `series`:",
            table(["key", "type", "meaning"], series),
        ]
    )


def columns_table(doc: str, columns: tuple[str, ...]) -> str:
    """The ``- ``name``: text`` lines of a columns docstring as a table, in column order."""
    intro, *items = doc.split("\n- ")
    meaning = dict(item.split(": ", 1) for item in items)
    meaning = {name.strip("`"): text for name, text in meaning.items()}
    rows = [[f"`{c}`", meaning.get(c, "")] for c in columns]
    return rst(intro.strip()) + "\n\n" + table(["column", "meaning"], rows)


def coverage_section() -> str:
    """The columns of the coverage, gap and warmup tables."""
    docs = attribute_docs(coverage)
    parts = ["## Coverage tables (`livermore_nb.coverage`)"]
    for name in ("COVERAGE_COLUMNS", "GAP_COLUMNS", "WARMUP_COLUMNS"):
        parts += [f"### `{name}`", columns_table(docs[name], getattr(coverage, name))]
    return "\n\n".join(parts)


def rst_simple_table(text: str) -> str:
    """A reST simple table (``====`` rules) as a Markdown table."""
    lines = [line for line in text.splitlines() if line.strip()]
    rule = lines[0]
    spans = [(m.start(), m.end()) for m in re.finditer(r"=+", rule)]
    body = [line for line in lines if not set(line.strip()) <= {"=", " "}]

    def split(line: str) -> list[str]:
        edges = [start for start, _ in spans[1:]] + [len(line)]
        return [line[s:e].strip() for s, e in zip([0, *edges[:-1]], edges, strict=True)]

    header, *rows = [split(line) for line in body]
    return table(header, rows)


def stages_section() -> str:
    """MACD-V's stages: the names in order and the band table of ``macdv.stages``."""
    lines = (inspect.getdoc(macdv.stages) or "").splitlines()
    rules = [i for i, line in enumerate(lines) if line.strip() and set(line) <= {"=", " "}]
    assert len(rules) == 3, "stages() lost its band table"
    names = ", ".join(f"`{s}`" for s in macdv.STAGES)
    return "\n\n".join(
        [
            "## MACD-V stages (`livermore_nb.macdv.stages`)",
            rst(attribute_docs(macdv)["STAGES"].rstrip(".")) + f": {names}.",
            rst("\n".join(lines[: rules[0]]).strip()),
            rst_simple_table("\n".join(lines[rules[0] : rules[2] + 1])),
            rst("\n".join(lines[rules[2] + 1 :]).strip()),
        ]
    )


def errors_section() -> str:
    """The error tree and its exit codes."""
    doc = inspect.getdoc(errors) or ""
    title, _, rest = doc.partition("\n\n")
    tree, _, tail = rest.partition("\n\n")
    codes = {n: v for n, v in vars(errors).items() if n.startswith("EXIT_")}
    rows = [[f"`{n}`", str(v)] for n, v in codes.items()]
    return "\n\n".join(
        [
            "## Errors and exit codes (`livermore_nb.errors`)",
            rst(title),
            "```\n" + inspect.cleandoc(tree) + "\n```",
            rst(tail),
            table(["constant", "exit code"], rows),
        ]
    )


def render() -> str:
    """The whole page."""
    sections = [config_section(), report_section(), coverage_section(), stages_section()]
    return "\n\n".join([HEADER.strip(), *sections, errors_section()]) + "\n"


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("api.md")
    out.write_text(render())
    print(f"wrote {out}")
