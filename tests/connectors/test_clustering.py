"""Cassandra's clustering order in Python (connectors/clustering.py) against what each sink
stores: a range bound comes from the commit log as the driver decodes it, a stored key as the
sink wrote it, and the two must meet where Cassandra's values are equal."""

from __future__ import annotations

import datetime
import struct

import pytest
from cassandra import util as cutil

from connectors.cassandra import values as cql_values
from connectors.cassandra.schema import ClusteringOrder
from connectors.cassandra.values import parse_cql_type
from connectors.clickhouse._types import converter as ch_converter
from connectors.clickhouse._types import stored_value as ch_stored
from connectors.clustering import ClusteringColumn, in_range
from connectors.postgres._values import converter as pg_converter
from operators.row_ops import ClusteringBound


def _stored(sink: str, cql: str, value):
    """VALUE as SINK stores it and reads it back for the range check."""
    t = parse_cql_type(cql)
    if sink == "clickhouse":
        return ch_stored(t)(ch_converter(t)(value))
    return pg_converter(t)(value)


def _contains(cql: str, start, start_inclusive, end, end_inclusive, stored) -> bool:
    column = ClusteringColumn("ck", parse_cql_type(cql), ClusteringOrder.ASC)
    start = ClusteringBound({} if start is None else {"ck": start}, start_inclusive)
    end = ClusteringBound({} if end is None else {"ck": end}, end_inclusive)
    return in_range([column], start, end)({"ck": stored})


# Milliseconds since the epoch far from 1970, where the driver's datetime is a few
# microseconds off (9999-12-31 23:59:59.999 decodes as ...59.998993), and near it.
FAR_MS = (253402300799999, 253402300799000, -62135596800000 + 1, 4102444800123, 1234)


@pytest.mark.parametrize("sink", ["postgres", "clickhouse"])
@pytest.mark.parametrize("ms", FAR_MS)
def test_a_timestamp_bound_meets_the_stored_row_of_the_same_millisecond(sink, ms) -> None:
    bound = cql_values._timestamp(struct.pack(">q", ms))  # noqa: SLF001 - as the flow decodes
    stored = _stored(sink, "timestamp", bound)
    assert _contains("timestamp", None, True, bound, True, stored)  # ck <= bound
    assert _contains("timestamp", bound, True, None, True, stored)  # ck >= bound
    assert not _contains("timestamp", None, True, bound, False, stored)  # ck < bound
    assert not _contains("timestamp", bound, False, None, True, stored)  # ck > bound
    # The millisecond before is below it, the one after above it.
    before = _stored(sink, "timestamp", cql_values._timestamp(struct.pack(">q", ms - 1)))  # noqa: SLF001
    assert _contains("timestamp", None, True, bound, False, before)


def test_times_compare_by_nanosecond_where_both_hold_them() -> None:
    """ClickHouse stores a time's nanoseconds: a bound of 1 ns excludes only that nanosecond.
    PostgreSQL keeps microseconds: there both sides are cut to microseconds, as it stored the
    row (the row at 2 ns is stored at 0 us, inside `>= 1 ns` and not inside `> 1 ns`; a row
    stored at 1 us from 1999 ns is not inside `< 1500 ns`, which Cassandra agrees with, where
    comparing 1000 ns with 1500 would delete a row Cassandra keeps)."""
    one, two = cutil.Time(1), cutil.Time(2)
    assert _contains("time", one, False, None, True, _stored("clickhouse", "time", two))
    assert not _contains("time", two, False, None, True, _stored("clickhouse", "time", two))
    assert _contains("time", None, True, two, True, _stored("clickhouse", "time", two))
    at_two_ns = _stored("postgres", "time", two)
    assert at_two_ns == datetime.time(0, 0)
    assert not _contains("time", one, False, None, True, at_two_ns)
    assert _contains("time", one, True, None, True, at_two_ns)
    late = cutil.Time(10**9 + 1999)  # 1.000001999 s: PostgreSQL holds 1.000001 s
    assert not _contains("time", None, True, cutil.Time(10**9 + 1500), False,
                         _stored("postgres", "time", late))
    assert not _contains("time", None, True, cutil.Time(10**9 + 1500), False,
                         _stored("clickhouse", "time", late))
