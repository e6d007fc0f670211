"""The exactly-once oracle's verdict (tests/dataflows/kill_harness.py): it must see a row held
twice, which the tests that claim "duplicates nothing" rely on."""

from __future__ import annotations

from tests.dataflows.kill_harness import difference


def test_a_duplicated_row_is_a_difference():
    a, b = ("p1", "Ana"), ("p2", "Bo")
    assert difference([a, b], [b, a], "log") is None
    assert difference([a, b], [a, b, a], "log") == (
        "0 rows missing or stale, 1 extra, stale or duplicated; see log")
    assert difference([a, b], [a], "log") == (
        "1 rows missing or stale, 0 extra, stale or duplicated; see log")
