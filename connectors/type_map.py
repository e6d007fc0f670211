"""The declarative CQL -> destination type map (connectors/typemap.json), shared by every sink.

`mapped_type(t, destination)` reads a column type from the file; code never branches on
types for that. A value or type a destination cannot hold raises `ValueRefused`, whose message
never contains the value (it may be personal data).
"""

from __future__ import annotations

import datetime
import json
from functools import cache
from importlib import resources
from typing import Any

from connectors.cassandra.values import CqlType

NAMES = {"postgres": "PostgreSQL", "clickhouse": "ClickHouse"}


def identity(value: Any) -> Any:
    """The converter of a value the driver already gives as the destination wants it: batch
    conversion (connectors/row_batch.py) skips columns converted by it."""
    return value


class ValueRefused(ValueError):
    """A value the destination cannot hold; the message never contains the value."""


@cache
def typemap() -> dict[str, Any]:
    text = resources.files("connectors").joinpath("typemap.json").read_text(encoding="utf-8")
    return json.loads(text)


def mapped_type(t: CqlType, destination: str) -> str:
    """The column type of CQL type T in DESTINATION ("postgres", "clickhouse")."""
    if t.kind == "counter":
        raise ValueRefused("counter columns are not captured (docs/adr/0003)")
    mapping = typemap()
    if t.kind == "vector":
        entry = mapping["vector"].get(t.params[0].kind, mapping["vector_default"])
    else:
        entry = mapping["types"].get(t.kind) or mapping["composite"].get(t.kind) or {}
    found = entry.get(destination)
    if found is None:
        raise ValueRefused(f"CQL type {t.cql} has no {NAMES.get(destination, destination)} "
                           "mapping in typemap.json")
    return found


def whole_milliseconds(value: datetime.datetime) -> datetime.datetime:
    """VALUE rounded to the nearest millisecond. A CQL timestamp is whole milliseconds, but
    cassandra-driver decodes it through a float of seconds: past about 2250 (and long before
    1970) the datetime it returns is off by a few microseconds (9999-12-31 23:59:59.999 reads
    as ...59.998993), and truncating that would lose a millisecond. The error stays far below
    half a millisecond for every year Python can hold, so rounding restores the exact value."""
    micros = value.microsecond % 1000
    if micros == 0:
        return value
    down = value - datetime.timedelta(microseconds=micros)
    if micros < 500:
        return down
    try:
        return down + datetime.timedelta(milliseconds=1)
    except OverflowError:  # 9999-12-31 23:59:59.999xxx: the driver only ever errs downwards
        return down
