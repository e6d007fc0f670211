"""Cassandra's clustering order in Python, to decide which stored rows a RangeDelete covers.

PostgreSQL orders some types differently from Cassandra (text by collation, not UTF-8 bytes;
uuid bytewise, not timeuuid by time; DESC columns), so the range is evaluated here: each
clustering value becomes a sort key that orders as Cassandra's comparator does, whether it is a
cassandra-driver value (a bound) or a value read back from PostgreSQL (a stored key).

Comparators: integers and decimals numerically; float/double as Java's Float/Double.compare
(-0.0 < 0.0, NaN last); text/ascii/varchar and blob by unsigned bytes (UTF-8); boolean
false < true; timestamp, date, time chronologically (a timestamp bound rounded to the whole
millisecond the sinks store; time by nanosecond, or by microsecond against PostgreSQL's
stored times, which keep no nanoseconds); inet by address bytes; timeuuid by
timestamp, then the clock-sequence/node bytes compared as signed bytes; uuid by version, then
(version 1) timestamp or (others) the high 64 bits unsigned, then the low 64 bits unsigned.
A DESC column reverses its comparison. Frozen collections, tuples, UDTs and masked columns
cannot be ordered here: a bound on such a column is refused (`UnsupportedRange`).
"""

from __future__ import annotations

import datetime
import decimal
import functools
import ipaddress
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cassandra import util as cutil

from connectors.cassandra.schema import ClusteringOrder
from connectors.cassandra.values import CqlType
from connectors.type_map import whole_milliseconds
from operators.row_ops import ClusteringBound

__all__ = ["ClusteringColumn", "UnsupportedRange", "in_range"]

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_EPOCH_DATE = datetime.date(1970, 1, 1)


class UnsupportedRange(ValueError):
    """A clustering range this sink cannot evaluate with Cassandra's ordering."""


@dataclass(frozen=True)
class ClusteringColumn:
    name: str
    type: CqlType
    order: ClusteringOrder
    masked: bool = False


def _number(v: Any) -> Any:
    return decimal.Decimal(v) if not isinstance(v, int | decimal.Decimal) else v


def _float(v: Any) -> tuple:
    v = float(v)
    if math.isnan(v):
        return (1, 0.0, 0)
    return (0, v, 0 if math.copysign(1.0, v) < 0 else 1)


def _text(v: Any) -> bytes:
    return v.encode("utf-8")


def _blob(v: Any) -> bytes:
    return bytes(v)


def _timestamp(v: Any) -> int:
    if isinstance(v, int):
        return v * 1000  # the driver's milliseconds
    # A bound is a driver datetime, a few microseconds off the whole millisecond far from
    # 1970 (type_map.whole_milliseconds); the sinks store the millisecond it rounds to.
    v = whole_milliseconds(v)
    if v.tzinfo is None:
        v = v.replace(tzinfo=datetime.UTC)
    delta = v - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _date(v: Any) -> int:
    if isinstance(v, cutil.Date):
        return v.days_from_epoch
    return (v - _EPOCH_DATE).days


@functools.total_ordering
class _TimeKey:
    """A time of day in nanoseconds, and whether it holds them all: a driver `Time` (a bound,
    or ClickHouse's stored Int64) does, a `datetime.time` (PostgreSQL's) only microseconds.
    Two exact ones compare by nanosecond; against an inexact one both are cut to microseconds,
    as PostgreSQL stored it."""

    __slots__ = ("exact", "nanoseconds")

    def __init__(self, nanoseconds: int, exact: bool) -> None:
        self.nanoseconds, self.exact = nanoseconds, exact

    def _pair(self, other: _TimeKey) -> tuple[int, int]:
        if self.exact and other.exact:
            return self.nanoseconds, other.nanoseconds
        return self.nanoseconds // 1000, other.nanoseconds // 1000

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _TimeKey):
            return NotImplemented
        a, b = self._pair(other)
        return a == b

    def __lt__(self, other: _TimeKey) -> bool:
        a, b = self._pair(other)
        return a < b

    __hash__ = None  # type: ignore[assignment] - compared, never hashed


def _time(v: Any) -> _TimeKey:
    if isinstance(v, cutil.Time):
        return _TimeKey(v.nanosecond_time, True)
    micros = ((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond
    return _TimeKey(micros * 1000, False)


def _inet(v: Any) -> bytes:
    return ipaddress.ip_address(str(v)).packed


def _reordered_msb(u: uuid.UUID) -> int:
    msb = u.int >> 64
    return ((msb << 48) & 0xFFFF_FFFF_FFFF_FFFF) | ((msb << 16) & 0xFFFF_0000_0000) | (msb >> 32)


def _timeuuid(v: Any) -> tuple:
    u = v if isinstance(v, uuid.UUID) else uuid.UUID(str(v))
    low = (u.int & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "big")
    return (_reordered_msb(u), bytes(b ^ 0x80 for b in low))  # signed bytes


def _uuid(v: Any) -> tuple:
    u = v if isinstance(v, uuid.UUID) else uuid.UUID(str(v))
    msb, lsb = u.int >> 64, u.int & 0xFFFF_FFFF_FFFF_FFFF
    version = (msb >> 12) & 0xF
    return (version, _reordered_msb(u) if version == 1 else msb, lsb)


_KEYS: dict[str, Callable[[Any], Any]] = {
    "int": int, "bigint": int, "smallint": int, "tinyint": int, "varint": int, "counter": int,
    "decimal": _number, "float": _float, "double": _float,
    "text": _text, "ascii": _text, "varchar": _text, "blob": _blob, "boolean": bool,
    "timestamp": _timestamp, "date": _date, "time": _time, "inet": _inet,
    "timeuuid": _timeuuid, "uuid": _uuid,
}


def _sort_key(column: ClusteringColumn) -> Callable[[Any], Any]:
    key = _KEYS.get(column.type.kind)
    if key is None or column.masked:
        why = "is masked" if column.masked else f"has type {column.type.cql}"
        raise UnsupportedRange(f"clustering column {column.name} {why}: a range bound on it "
                               "cannot be evaluated in Cassandra's order")
    return key


def _compare(columns: Sequence[ClusteringColumn], row: Mapping[str, Any],
             prefix: Mapping[str, Any]) -> int:
    """Cassandra's comparison of ROW's clustering, cut to len(PREFIX) columns, with PREFIX."""
    for column in columns[: len(prefix)]:
        key = _sort_key(column)
        a, b = key(row[column.name]), key(prefix[column.name])
        if a != b:
            sign = -1 if a < b else 1
            return -sign if column.order is ClusteringOrder.DESC else sign
    return 0


def in_range(columns: Sequence[ClusteringColumn], start: ClusteringBound,
             end: ClusteringBound) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate: does a row's clustering (column name -> value) fall within [start, end]?"""
    for bound in (start, end):
        names = [c.name for c in columns[: len(bound.prefix)]]
        if len(bound.prefix) > len(columns) or set(bound.prefix) != set(names):
            raise UnsupportedRange("a clustering bound must be a prefix of the clustering "
                                   f"columns {[c.name for c in columns]}, got "
                                   f"{sorted(bound.prefix)}")
        for column in columns[: len(bound.prefix)]:
            _sort_key(column)

    def contains(row: Mapping[str, Any]) -> bool:
        if start.prefix:
            c = _compare(columns, row, start.prefix)
            if c < 0 or (c == 0 and not start.inclusive):
                return False
        if end.prefix:
            c = _compare(columns, row, end.prefix)
            if c > 0 or (c == 0 and not end.inclusive):
                return False
        return True

    return contains
