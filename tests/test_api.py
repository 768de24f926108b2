"""The public API is what DESIGN.md promises a notebook cell, and nothing private leaks."""

from __future__ import annotations

import inspect

import livermore_nb


def test_all_is_the_public_api() -> None:
    assert set(livermore_nb.__all__) == {
        "AuthError",
        "BackfillConfig",
        "BackfillReport",
        "Candle",
        "CandleStore",
        "ConfigError",
        "LivermoreError",
        "NotReady",
        "RedisUnavailable",
        "SeriesResult",
        "StoreError",
        "TIMEFRAMES",
        "Timeframe",
        "UpstreamError",
        "__version__",
        "backfill",
        "raise_for_gate",
    }
    assert all(hasattr(livermore_nb, name) for name in livermore_nb.__all__)


def test_design_calls_have_the_promised_shape() -> None:
    from livermore_nb.coverage import coverage
    from livermore_nb.macdv import macdv

    assert inspect.iscoroutinefunction(livermore_nb.backfill)  # await backfill(config)
    assert list(inspect.signature(coverage).parameters)[:3] == [
        "redis",
        "symbols",
        "timeframes",
    ]
    assert next(iter(inspect.signature(macdv).parameters)) == "df"


def test_module_names_are_not_shadowed_by_functions() -> None:
    import livermore_nb.coverage
    import livermore_nb.macdv

    assert inspect.ismodule(livermore_nb.coverage)
    assert inspect.ismodule(livermore_nb.macdv)
