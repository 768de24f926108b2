"""Candle parsing edge cases the property tests leave out: JSON types other than strings."""

from __future__ import annotations

import pytest

from livermore_nb.candles import Candle, parse_candles_payload
from livermore_nb.errors import MalformedResponse
from livermore_nb.timeframes import TIMEFRAMES, largest_gap

H1 = TIMEFRAMES["1h"]
RAW = {"start": "1712192400", "low": "9", "high": "12", "open": "10", "close": "11", "volume": "5"}


@pytest.mark.parametrize("field", ["open", "high", "low", "close", "volume"])
def test_a_true_false_value_rejects_the_page(field: str) -> None:
    page = {"candles": [RAW, {**RAW, "start": "1712196000", field: True}]}
    with pytest.raises(MalformedResponse, match="true/false"):
        parse_candles_payload(page, H1)


def test_plain_json_numbers_parse_like_strings() -> None:
    numeric = {k: (int(v) if k == "start" else float(v)) for k, v in RAW.items()}
    expected = [Candle(1712192400000, 10.0, 12.0, 9.0, 11.0, 5.0)]
    assert parse_candles_payload({"candles": [numeric]}, H1) == expected
    assert parse_candles_payload({"candles": [RAW]}, H1) == expected


def test_largest_gap_counts_missing_periods_between_open_times() -> None:
    five = 300_000
    assert largest_gap([0, five, 5 * five, 6 * five], 300) == 3  # 2, 3 and 4 are missing
    assert largest_gap([0, five], 300) == 0
    assert largest_gap([], 300) == 0 and largest_gap([7 * five], 300) == 0
