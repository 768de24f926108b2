"""docs/api.md is what docs/render_api.py renders from the docstrings today."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture(scope="module")
def renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_api", DOCS / "render_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_md_is_current(renderer: ModuleType) -> None:
    assert (DOCS / "api.md").read_text() == renderer.render(), "run `make api-docs`"


def test_every_column_and_report_key_is_documented(renderer: ModuleType) -> None:
    from livermore_nb.coverage import COVERAGE_COLUMNS, GAP_COLUMNS, WARMUP_COLUMNS

    page = renderer.render()
    for column in (*COVERAGE_COLUMNS, *GAP_COLUMNS, *WARMUP_COLUMNS):
        assert f"| `{column}` | |" not in page and f"| `{column}` |" in page
    for row in page.splitlines():
        if row.startswith("| `") and row.count("|") == 4:  # key | type | meaning
            assert not row.endswith("|  |"), f"undocumented: {row}"


def test_the_renderer_reads_attribute_docstrings(renderer: ModuleType) -> None:
    import importlib

    backfill = importlib.import_module("livermore_nb.backfill")
    docs = renderer.attribute_docs(backfill, "SeriesResult")
    assert docs["candles"] == "Candles the series holds in Redis after the run (count)."
    assert renderer.rst(":func:`~x.y` and ``z``::\n") == "`x.y` and `z`:\n"
