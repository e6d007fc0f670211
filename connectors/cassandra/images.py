"""Rows as read back from Cassandra, and the row operations they state.

Shared by the live capture's read-back (operators/readback.py) and the initial load
(connectors/cassandra/snapshot.py), so that a changed row and a loaded row become the same
operation: the SELECT list of an image (values, write times, TTLs), the Image of a driver row,
and the upserts of its regular and static columns (docs/adr/0003).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cassandra.metadata import protect_name

from connectors.cassandra.schema import ColumnKind, ColumnSpec, TableSchema
from operators.row_ops import RowUpsert, Source

__all__ = ["Image", "expires_at", "image_of", "select_items", "static_upsert_of", "statics_of",
           "upsert_of"]


@dataclass(frozen=True)
class Image:
    """One row as read: its key, its column values, their write times and, for cells with a
    TTL, the seconds they have left (the least of a collection's elements)."""

    key: dict[str, Any]
    values: dict[str, Any]
    write_times: dict[str, int]
    ttls: dict[str, int] = field(default_factory=dict)

    @property
    def version(self) -> int | None:
        return max(self.write_times.values(), default=None)


def select_items(key_columns: Sequence[str], columns: Sequence[ColumnSpec]) -> list[str]:
    """The SELECT list of an image: the key columns, then each column and its write time
    (MAXWRITETIME for non-frozen collections and UDTs), then each column's TTL (the least of
    its elements' for non-frozen ones), quoted by the driver's protect_name."""
    return [protect_name(c) for c in key_columns] + [
        part for c in columns for part in (
            protect_name(c.name),
            f"{'maxwritetime' if c.is_complex else 'writetime'}({protect_name(c.name)})")] + [
        # collection_min: the driver cannot decode a list<int> with null elements (elements
        # without a TTL), and the least is all that is needed.
        f"collection_min(ttl({protect_name(c.name)}))" if c.is_complex
        else f"ttl({protect_name(c.name)})" for c in columns]


def image_of(row, key_columns: Sequence[str], columns: Sequence[ColumnSpec]) -> Image:
    """The Image of a row (a tuple, or any sequence) read with select_items(key_columns,
    columns) (extra trailing items are ignored)."""
    key = dict(zip(key_columns, row, strict=False))  # the key columns come first
    values, times, ttls = {}, {}, {}
    ttl_base = len(key_columns) + 2 * len(columns)
    for index, column in enumerate(columns):
        base = len(key_columns) + 2 * index
        values[column.name] = row[base]
        if row[base + 1] is not None:
            times[column.name] = row[base + 1]
        ttl = row[ttl_base + index]
        if ttl is not None:
            ttls[column.name] = ttl
    return Image(key, values, times, ttls)


def expires_at(ttls: Iterable[int], read_at: int | None) -> int | None:
    """When the next of these cells expires, in microseconds since the epoch, a second late
    (TTLs have one-second resolution): READ_AT (the read's start, now if None) plus the least
    TTL; None without one."""
    least = min(ttls, default=None)
    if least is None:
        return None
    start = read_at if read_at is not None else time.time_ns() // 1000
    return start + (least + 1) * 1_000_000


def upsert_of(table: TableSchema, image: Image, source: Source, *,
              version_if_unknown: Callable[[], int], with_statics: bool = False,
              version: int | None = None) -> RowUpsert:
    """The row upsert of an image: its regular columns (statics too if asked), versioned by
    VERSION (the read's time), or without one by their largest write time. A row holding only
    its primary key shows no write time; it exists, and version_if_unknown() says as of when."""
    regular = table.regular_names
    values = {n: v for n, v in image.values.items() if with_statics or n in regular}
    expires = expires_at((t for n, t in image.ttls.items() if with_statics or n in regular),
                         version)
    if version is None:
        times = [t for n, t in image.write_times.items() if with_statics or n in regular]
        version = max(times, default=None)
    if version is None:
        version = version_if_unknown()
    return RowUpsert(table.keyspace, table.name, image.key, values, version, source,
                     expires=expires)


def statics_of(table: TableSchema, image: Image) -> Image:
    """The static row inside an image of a row read with its static columns: the partition
    key, the static columns' values, write times and TTLs."""
    static = {c.name for c in table.columns.values() if c.kind is ColumnKind.STATIC}
    return Image({c.name: image.key[c.name] for c in table.partition_key},
                 {n: v for n, v in image.values.items() if n in static},
                 {n: t for n, t in image.write_times.items() if n in static},
                 {n: t for n, t in image.ttls.items() if n in static})


def static_upsert_of(table: TableSchema, partition_key: Mapping[str, Any], statics: Image | None,
                     source: Source, *, version: int | None = None) -> RowUpsert | None:
    """The static row of a partition from an image of its static columns, versioned by
    VERSION (the read's time) or its write times; None when no static cell is live (no static
    row to state)."""
    if statics is None or not statics.write_times:
        return None
    return RowUpsert(table.keyspace, table.name, dict(partition_key), statics.values,
                     statics.version if version is None else version, source, static=True,
                     expires=expires_at(statics.ttls.values(), version))
