"""CQL types -> PostgreSQL column types (from connectors/typemap.json) and Python value rules.

Values arrive as cassandra-driver values (after masking) and leave as values psycopg writes
through text COPY. The rules, in one place:

- timestamp: the driver's naive UTC datetime -> an aware UTC datetime (timestamptz);
- date: ``cassandra.util.Date`` -> ``datetime.date`` (days outside Python's years 1..9999 are
  refused); time: ``cassandra.util.Time`` -> ``datetime.time``, nanoseconds TRUNCATED to
  microseconds (PostgreSQL's precision); duration: Cassandra's literal text (``1mo2d3ns``),
  exact (interval has no nanoseconds);
- text: refused if it holds U+0000 (PostgreSQL text cannot);
- inet: its text form; varint/decimal: numeric, exact;
- vector<float|double>: a list of floats (real[] / double precision[]);
- collections, tuples, UDTs (and other vectors) -> jsonb text: list and set (also ``SortedSet``)
  -> array in the driver's order; map (also ``OrderedMap``) -> object whose keys are the text
  form of the map keys; tuple -> array; UDT -> object by field name. Inside JSON: int and bool
  as themselves, float as a number (NaN and infinities as the strings "NaN", "Infinity",
  "-Infinity"), Decimal as a string (exact), UUID/inet/duration as text, timestamp as ISO-8601
  UTC, date ISO, time as HH:MM:SS.nnnnnnnnn (exact), blob as "\\x<hex>".
"""

from __future__ import annotations

import datetime
import decimal
import ipaddress
import json
import math
import uuid
from collections.abc import Callable, Mapping
from itertools import repeat
from operator import add, attrgetter, floordiv, mod, mul, sub
from typing import Any

from cassandra import util as cutil

from connectors.cassandra.values import CqlType
from connectors.type_map import ValueRefused, identity, mapped_type, typemap, whole_milliseconds

__all__ = ["ValueRefused", "column_type", "converter", "identity", "typemap"]

DESTINATION = "postgres"
_UTC = datetime.UTC
_EPOCH = datetime.datetime(1970, 1, 1)
_EPOCH_UTC = datetime.datetime(1970, 1, 1, tzinfo=_UTC)
_MILLISECOND = datetime.timedelta(milliseconds=1)
_EPOCH_LESS_HALF_MS = _EPOCH - datetime.timedelta(microseconds=500)
_LAST_ROUNDABLE = datetime.datetime(9999, 12, 31, 23, 59, 59, 999500)
_microsecond_of = attrgetter("microsecond")


def column_type(t: CqlType) -> str:
    """The PostgreSQL column type of a CQL type, per connectors/typemap.json."""
    return mapped_type(t, DESTINATION)


def converter(t: CqlType) -> Callable[[Any], Any]:
    """value -> what psycopg writes into the column of `column_type(t)` (None stays None)."""
    pg = column_type(t)
    if pg == "jsonb":
        def to_json(value: Any) -> Any:
            if value is None:
                return None
            text = json.dumps(_jsonable(value, t), ensure_ascii=False, allow_nan=False,
                              separators=(",", ":"))
            if "\\u0000" in text:
                raise ValueRefused("jsonb cannot hold U+0000")
            return text
        return to_json
    if t.kind == "vector":
        return lambda v: None if v is None else [float(x) for x in v]
    return _SCALAR.get(t.kind, identity)


def _text(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueRefused(f"expected text, got {type(value).__name__}")
    if "\x00" in value:
        raise ValueRefused("text cannot hold U+0000 in PostgreSQL")
    return value


def _timestamp(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        value = whole_milliseconds(value)  # see whole_milliseconds: the driver's float error
        # The same aware datetime as value.replace(tzinfo=UTC), about ten times faster (replace
        # parses keywords); exact: timedelta arithmetic is in whole microseconds.
        return _EPOCH_UTC + (value - _EPOCH) if value.tzinfo is None else value
    if isinstance(value, int) and not isinstance(value, bool):  # milliseconds since the epoch
        return datetime.datetime(1970, 1, 1, tzinfo=_UTC) + datetime.timedelta(milliseconds=value)
    return value


def _date(value: Any) -> Any:
    if isinstance(value, cutil.Date):
        try:
            return value.date()
        except (ValueError, OverflowError):
            raise ValueRefused("date outside the years 1..9999") from None
    return value


def _time(value: Any) -> Any:
    if isinstance(value, cutil.Time):
        return datetime.time(value.hour, value.minute, value.second, value.nanosecond // 1000)
    return value


def _duration(value: Any) -> Any:
    if isinstance(value, cutil.Duration):
        return str(value)
    return None if value is None else str(value)


def _inet(value: Any) -> Any:
    return None if value is None else str(value)


def _varint(value: Any) -> Any:
    return None if value is None else decimal.Decimal(value)


# Whole-column forms (connectors/row_batch.py): C-level loops giving exactly what the per-value
# function gives, or raising where they cannot tell (the values then go one by one).

def _text_column(column: list) -> list:
    # One search of the joined column finds a NUL in any value.
    if set(map(type, column)) != {str} or "\x00" in "".join(column):
        raise ValueError  # per value: refuses, naming the value's problem
    return list(column)


def _timestamp_column(column: list) -> list:
    # Naive datetimes only (anything else raises in the subtraction or has no microsecond).
    if not any(map(mod, map(_microsecond_of, column), repeat(1000))):
        # Whole milliseconds already (as the driver decodes timestamps): nothing to round.
        return list(map(add, repeat(_EPOCH_UTC), map(sub, column, repeat(_EPOCH))))
    # None in the last half millisecond of 9999 (whole_milliseconds keeps those from
    # overflowing).
    if max(column) >= _LAST_ROUNDABLE:
        raise OverflowError
    # whole_milliseconds(t), as milliseconds since the epoch: floor((t - epoch + 0.5 ms) / 1 ms)
    millis = map(floordiv, map(sub, column, repeat(_EPOCH_LESS_HALF_MS)), repeat(_MILLISECOND))
    return list(map(add, repeat(_EPOCH_UTC), map(mul, millis, repeat(_MILLISECOND))))


_text.column = _text_column  # type: ignore[attr-defined]
_timestamp.column = _timestamp_column  # type: ignore[attr-defined]

_SCALAR: dict[str, Callable[[Any], Any]] = {
    "ascii": _text, "text": _text, "varchar": _text,
    "timestamp": _timestamp, "date": _date, "time": _time, "duration": _duration,
    "inet": _inet, "varint": _varint,
}


def _json_scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.datetime):
        return _timestamp(value).isoformat()
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, cutil.Date):
        return _date(value).isoformat()
    if isinstance(value, cutil.Time):
        return (f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}."
                f"{value.nanosecond:09d}")
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, uuid.UUID | cutil.Duration | ipaddress.IPv4Address |
                  ipaddress.IPv6Address):
        return str(value)
    raise ValueRefused(f"no JSON form for {type(value).__name__}")


def _key_text(value: Any, t: CqlType | None) -> str:
    plain = _jsonable(value, t)
    if isinstance(plain, str):
        return plain
    return json.dumps(plain, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _jsonable(value: Any, t: CqlType | None) -> Any:
    """A JSON-able form of VALUE, guided by its CQL type T where known."""
    if value is None:
        return None
    kind = t.kind if t is not None else None
    params = t.params if t is not None else ()
    if kind == "udt" or (kind is None and hasattr(value, "_fields")):
        names = t.field_names if t is not None else value._fields
        items = value.items() if isinstance(value, Mapping) else zip(names, value, strict=False)
        types = dict(zip(names, params, strict=False))
        return {name: _jsonable(v, types.get(name)) for name, v in items}
    if kind == "map" or (kind is None and isinstance(value, Mapping)):
        kt, vt = (params[0], params[1]) if len(params) == 2 else (None, None)
        return {_key_text(k, kt): _jsonable(v, vt) for k, v in value.items()}
    if kind in ("list", "set", "vector", "tuple") or isinstance(
            value, list | tuple | set | frozenset | cutil.SortedSet):
        if kind == "tuple":
            return [_jsonable(v, p) for v, p in zip(value, params, strict=False)]
        element = params[0] if params else None
        return [_jsonable(v, element) for v in value]
    return _json_scalar(value)
