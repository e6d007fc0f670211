"""CQL types -> ClickHouse column types (the 'clickhouse' key of connectors/typemap.json) and
the Python forms clickhouse-connect writes.

Every type is one ClickHouse 18.16 also has; nothing is rounded (see typemap.json's
_comment_clickhouse for the reasons):

- text/ascii/varchar -> String (UTF-8 bytes); blob, custom, empty -> String (raw bytes);
- int/bigint/smallint/tinyint -> Int32/Int64/Int16/Int8; boolean -> UInt8 (0/1);
  float/double -> Float32/Float64;
- decimal, varint -> String holding the exact decimal text (``str(Decimal)``, ``str(int)``); a
  clustering decimal the text of its value (``1.50`` -> ``1.5``: Cassandra's row identity);
- uuid, timeuuid -> UUID; inet -> String (its text form); duration -> String (``1mo2d3ns``);
- timestamp -> Int64 epoch milliseconds (Cassandra's precision: exact);
  date -> Int32 days since 1970-01-01; time -> Int64 nanoseconds since midnight;
- collections, tuples, UDTs, vectors -> String holding JSON, by the PostgreSQL sink's JSON
  rules (connectors/postgres/_values.py: map keys as text, Decimal as a string, ...).

Every String value is written as bytes (clickhouse-connect picks str or bytes for a whole
column from its first value). `stored_value` turns what was written (or is read back with
bytes formats) into a value `connectors.clustering` orders as Cassandra does.
"""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
from collections.abc import Callable
from itertools import repeat
from operator import floordiv, sub
from typing import Any

from cassandra import util as cutil

from connectors.cassandra.values import CqlType
from connectors.postgres._values import _jsonable
from connectors.type_map import ValueRefused, mapped_type, whole_milliseconds

__all__ = ["ValueRefused", "column_type", "converter", "stored_value"]

DESTINATION = "clickhouse"
_EPOCH = datetime.datetime(1970, 1, 1)
_EPOCH_DATE = datetime.date(1970, 1, 1)
_MILLISECOND = datetime.timedelta(milliseconds=1)
_EPOCH_LESS_HALF_MS = _EPOCH - datetime.timedelta(microseconds=500)
_LAST_ROUNDABLE = datetime.datetime(9999, 12, 31, 23, 59, 59, 999500)
_JSON_KINDS = frozenset({"list", "set", "map", "tuple", "udt", "vector"})
_BYTES_KINDS = frozenset({"blob", "custom", "empty"})
_TEXT_FORM_KINDS = frozenset({"decimal", "varint", "inet", "duration", "ascii", "text",
                              "varchar"})


def column_type(t: CqlType) -> str:
    """The (non-Nullable) ClickHouse column type of a CQL type, per connectors/typemap.json."""
    return mapped_type(t, DESTINATION)


def _none_safe(f: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        return None if value is None else f(value)
    # For a column holding no None, connectors/row_batch.py maps F itself (one call a value).
    convert.__wrapped__ = f  # type: ignore[attr-defined]
    return convert


def _utf8(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise ValueRefused(f"expected text, got {type(value).__name__}")
    return value.encode("utf-8")


def _text_form(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def _decimal(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(decimal.Decimal(value)).encode()


def _decimal_by_value(value: Any) -> bytes:
    """A clustering decimal's text: one per value. Cassandra orders and matches clustering
    decimals by value (BigDecimal.compareTo: 1.0 and 1.00 are one row), and a String sort key
    matches by text, so the text drops trailing zeros (`1.50` -> `1.5`, `100` -> `1E+2`,
    every zero `0`), without rounding (no context precision is involved)."""
    if isinstance(value, bytes):
        return value
    sign, digits, exponent = decimal.Decimal(value).as_tuple()
    if not any(digits):
        return b"0"
    kept = len(digits)
    while digits[kept - 1] == 0:
        kept -= 1
    return str(decimal.Decimal((sign, digits[:kept], exponent + len(digits) - kept))).encode()


def _varint(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    value = int(value)
    try:
        return str(value).encode()
    except ValueError:  # past Python's int-to-text limit (4300 digits): exact through Decimal
        return str(decimal.Decimal(value)).encode()


def _blob(value: Any) -> bytes:
    return bytes(value)


def _timestamp(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # the driver's milliseconds (dates outside Python's datetime range)
    if not isinstance(value, datetime.datetime):
        raise ValueRefused(f"expected a timestamp, got {type(value).__name__}")
    if value.tzinfo is not None:
        value = value.astimezone(datetime.UTC).replace(tzinfo=None)
    # Rounded, not truncated: the driver's datetime of a far timestamp is a few microseconds
    # short of the real millisecond (connectors/type_map.py, whole_milliseconds).
    return (whole_milliseconds(value) - _EPOCH) // _MILLISECOND  # floor, like Cassandra's


def _date(value: Any) -> int:
    if isinstance(value, cutil.Date):
        return value.days_from_epoch
    if isinstance(value, datetime.date):
        return (value - _EPOCH_DATE).days
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueRefused(f"expected a date, got {type(value).__name__}")


def _time(value: Any) -> int:
    if isinstance(value, cutil.Time):
        return value.nanosecond_time
    if isinstance(value, datetime.time):
        return (((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000
                + value.microsecond) * 1000
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueRefused(f"expected a time, got {type(value).__name__}")


# Whole-column forms (connectors/row_batch.py): C-level loops giving exactly what the per-value
# function gives, or raising where they cannot tell (the values then go one by one).

def _utf8_column(column: list) -> list:
    return list(map(str.encode, column))  # bytes (or anything but str) raise: per value


def _timestamp_column(column: list) -> list:
    # Naive datetimes only (anything else raises in the subtraction) and none in the last
    # half millisecond of 9999 (whole_milliseconds keeps those from overflowing).
    if max(column) >= _LAST_ROUNDABLE:
        raise OverflowError
    # floor((t - epoch + 0.5 ms) / 1 ms) = whole_milliseconds(t), then floor to milliseconds.
    return list(map(floordiv, map(sub, column, repeat(_EPOCH_LESS_HALF_MS)),
                    repeat(_MILLISECOND)))


def _of_type(kind: type) -> Callable[[list], list]:
    """A column of KIND's values only is what int()/float() would give, as it is (one pass
    instead of a call per value); anything else raises: then value by value."""
    def column_of(column: list) -> list:
        if set(map(type, column)) != {kind}:
            raise TypeError
        return column
    return column_of


def _uuid_column(column: list) -> list:
    if not all(map(isinstance, column, repeat(uuid.UUID))):
        raise TypeError
    return list(column)


def _boolean_column(column: list) -> list:
    return list(map(int, map(bool, column)))


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _boolean(value: Any) -> int:
    return 1 if value else 0


_COLUMN: dict[str, Callable[[list], list]] = {
    "ascii": _utf8_column, "text": _utf8_column, "varchar": _utf8_column,
    "timestamp": _timestamp_column, "uuid": _uuid_column, "timeuuid": _uuid_column,
    "boolean": _boolean_column,
    "int": _of_type(int), "bigint": _of_type(int), "smallint": _of_type(int),
    "tinyint": _of_type(int), "float": _of_type(float), "double": _of_type(float),
}
_SCALAR: dict[str, Callable[[Any], Any]] = {
    "ascii": _utf8, "text": _utf8, "varchar": _utf8,
    "int": int, "bigint": int, "smallint": int, "tinyint": int,
    "float": float, "double": float, "boolean": _boolean,
    "decimal": _decimal, "varint": _varint, "inet": _text_form, "duration": _text_form,
    "uuid": _uuid, "timeuuid": _uuid,
    "timestamp": _timestamp, "date": _date, "time": _time,
}


def converter(t: CqlType, *, clustering: bool = False) -> Callable[[Any], Any]:
    """value (a cassandra-driver value after masking) -> what clickhouse-connect writes into
    the column of `column_type(t)`; None stays None. CLUSTERING: for a clustering column, whose
    values are one row when Cassandra compares them equal (a decimal's text by value)."""
    column_type(t)  # refuses unmapped types
    if clustering and t.kind == "decimal":
        return _none_safe(_decimal_by_value)
    if t.kind in _JSON_KINDS:
        def to_json(value: Any) -> Any:
            if value is None:
                return None
            return json.dumps(_jsonable(value, t), ensure_ascii=False, allow_nan=False,
                              separators=(",", ":")).encode("utf-8")
        return to_json
    if t.kind in _BYTES_KINDS:
        return _none_safe(_blob)
    scalar = _SCALAR.get(t.kind)
    if scalar is None:
        raise ValueRefused(f"CQL type {t.cql} has no ClickHouse value rule")
    convert = _none_safe(scalar)
    if t.kind in _COLUMN:
        convert.column = _COLUMN[t.kind]  # type: ignore[attr-defined]
    return convert


def stored_value(t: CqlType) -> Callable[[Any], Any]:
    """A written (or read back, String as bytes) value -> a value that
    connectors.clustering orders in Cassandra's order."""
    if t.kind in _TEXT_FORM_KINDS:
        return lambda v: v.decode("utf-8") if isinstance(v, bytes) else v
    if t.kind == "date":
        return lambda v: cutil.Date(v) if isinstance(v, int) else v
    if t.kind == "time":
        return lambda v: cutil.Time(v) if isinstance(v, int) else v
    return lambda v: v
