"""Apply a batch of row operations to ClickHouse: versioned inserts into ReplacingMergeTree.

There are no transactions and no conditional writes: every operation becomes an inserted row
carrying its version (a tombstone is a row with _cdc_deleted = 1), and the engine keeps the
highest version per key (ties: the last inserted) at merge time; readers use FINAL (the
"__current" view does). So an older image inserted later can never win, and replaying a batch
inserts rows that merge into the same result.

Operations are applied in order into per-table image sets (per key the highest version, ties
to the later operation), and each destination table gets ONE insert per batch, with explicit
column types (clickhouse-connect cannot look them up on 18.16). A RangeDelete reads the
partition's stored keys and versions (FINAL), evaluates the clustering range in Python in
Cassandra's order (connectors.postgres._ordering), and adds tombstones at op.version for the
covered keys whose stored version is <= op.version, and for the covered images gathered
earlier in the same batch. Progress is inserted after the data (a crash between them replays
data that merges to the same state).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.binding import quote_identifier as q
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DataError, ProgrammingError

from connectors.cassandra.events import Position
from connectors.clickhouse._ddl import PROGRESS_TABLE
from connectors.clickhouse._layout import CDC_WRITTEN, Column, TableLayout
from connectors.clickhouse._types import ValueRefused
from connectors.postgres._ordering import in_range
from connectors.row_sink import Image, key_fingerprint
from connectors.row_sink import RejectedValueError as SharedRejectedValueError
from operators.row_ops import RangeDelete, RowDelete, RowOp, RowUpsert

__all__ = ["RejectedValueError", "apply_batch", "key_fingerprint"]


class RejectedValueError(SharedRejectedValueError):
    sink = "ClickHouse"


@dataclass
class _Target:
    """One destination table (rows or static companion) and the images gathered for it."""

    name: str
    key: tuple[Column, ...]
    values: tuple[Column, ...]
    images: dict[tuple, Image] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.value_names = frozenset(c.name for c in self.values)
        self.key_plan = tuple((c.name, c.convert) for c in self.key)
        self.value_plan = tuple((c.name, c.convert) for c in self.values)

    def add(self, image: Image) -> None:
        current = self.images.get(image.key)
        if current is None or image.version >= current.version:
            self.images[image.key] = image


def _convert(table: str, key: tuple, column: Column, value: Any) -> Any:
    try:
        return column.convert(value)
    except (ValueRefused, ValueError, TypeError, OverflowError, AttributeError) as error:
        reason = str(error) if isinstance(error, ValueRefused) else type(error).__name__
        raise RejectedValueError(table, column.name, key_fingerprint(key), reason) from None


def _convert_key(table: str, columns: tuple[Column, ...], key: Mapping[str, Any]) -> tuple:
    raw = tuple(key.get(c.name) for c in columns)
    converted = tuple(_convert(table, raw, c, key.get(c.name)) for c in columns)
    missing = [c.name for c, v in zip(columns, converted, strict=True) if v is None]
    if missing:
        raise RejectedValueError(table, missing[0], key_fingerprint(converted),
                                 "a primary-key column is NULL or missing")
    return converted


class _Batch:
    def __init__(self, client: Client, database: str,
                 layout_of: Callable[[str, str], TableLayout]):
        self.client = client
        self.database = database
        self.layout_of = layout_of
        self.targets: dict[str, _Target] = {}
        self.cached: dict[tuple[str, str, bool], _Target] = {}

    def target(self, layout: TableLayout, static: bool) -> _Target:
        if static and layout.static_table is None:
            raise RejectedValueError(layout.rows_table, None, None,
                                     f"{layout.keyspace}.{layout.table} has no static columns")
        name = layout.static_table if static else layout.rows_table
        assert name is not None
        found = self.targets.get(name)
        if found is None:
            key = layout.partition if static else layout.key
            values = layout.static if static else layout.regular
            found = self.targets[name] = _Target(name, key, values)
        return found

    def row(self, op: RowUpsert | RowDelete) -> None:
        cache_key = (op.keyspace, op.table, op.static)
        target = self.cached.get(cache_key)
        if target is None:
            target = self.cached[cache_key] = self.target(
                self.layout_of(op.keyspace, op.table), op.static)
        values = None
        try:  # the hot path; any problem is redone slowly to name the column
            got = op.key.get
            key = tuple(f(got(n)) for n, f in target.key_plan)
            if None in key:
                raise ValueRefused("NULL key")
            if isinstance(op, RowUpsert):
                if not target.value_names.issuperset(op.values):
                    raise ValueRefused("unknown column")
                got = op.values.get
                values = tuple(f(got(n)) for n, f in target.value_plan)
        except Exception:  # noqa: BLE001 - redone slowly to name the column, then raised
            key, values = self._row_slowly(target, op)
        target.add(Image(key, values, op.version, op.source))

    def _row_slowly(self, target: _Target, op: RowUpsert | RowDelete) -> tuple[tuple, Any]:
        key = _convert_key(target.name, target.key, op.key)
        if not isinstance(op, RowUpsert):
            return key, None
        unknown = set(op.values) - target.value_names
        if unknown:
            raise RejectedValueError(target.name, sorted(unknown)[0], key_fingerprint(key),
                                     "the column is not in the table's schema")
        got = op.values.get
        return key, tuple(_convert(target.name, key, c, got(c.name)) for c in target.values)

    def range_delete(self, op: RangeDelete) -> None:
        layout = self.layout_of(op.keyspace, op.table)
        contains = in_range(layout.clustering_columns(), op.start, op.end)
        rows = self.target(layout, static=False)
        pk = _convert_key(rows.name, layout.partition, op.partition_key)
        width = len(pk)

        def covered(key: tuple) -> bool:
            clustering = {c.name: c.stored(v)
                          for c, v in zip(layout.clustering, key[width:], strict=True)}
            return contains(clustering)

        tombstones = [k for k, image in rows.images.items()
                      if k[:width] == pk and image.version <= op.version and covered(k)]
        for stored_key, stored_version in self._stored_versions(layout, pk):
            if stored_version <= op.version and covered(stored_key):
                tombstones.append(stored_key)
        for key in tombstones:
            rows.add(Image(key, None, op.version, op.source))
        if op.include_static and layout.static_table is not None:
            self.target(layout, static=True).add(Image(pk, None, op.version, op.source))

    def _stored_versions(self, layout: TableLayout, pk: tuple) -> list[tuple[tuple, int]]:
        """(key, version) of every stored row of the partition, as FINAL merges them. Filters
        on sort-key columns only, so they apply before the merge and every version is seen."""
        conditions, parameters = [], {}
        for i, (c, v) in enumerate(zip(layout.partition, pk, strict=True)):
            name = f"p{i}"
            if c.is_string:
                conditions.append(f"{q(c.ch_name)} = unhex(%({name})s)")
                parameters[name] = v.hex()
            elif c.ch_type == "UUID":
                conditions.append(f"{q(c.ch_name)} = toUUID(%({name})s)")
                parameters[name] = str(v)
            else:
                conditions.append(f"{q(c.ch_name)} = %({name})s")
                parameters[name] = v
        selected = ", ".join(q(c.ch_name) for c in layout.key)
        table = f"{q(self.database)}.{q(layout.rows_table)}"
        # Identifiers quoted by quote_identifier, values bound by the client.
        query = f"SELECT {selected}, _cdc_version FROM {table} FINAL WHERE "  # noqa: S608
        result = self.client.query(
            query + " AND ".join(conditions), parameters=parameters,
            column_formats={c.ch_name: "bytes" for c in layout.key if c.is_string})
        return [(tuple(r[:-1]), r[-1]) for r in result.result_rows]

    def flush_all(self) -> None:
        for target in self.targets.values():
            self.flush(target)
        self.targets.clear()

    def flush(self, target: _Target) -> None:
        if not target.images:
            return
        nulls = (None,) * len(target.values)
        data = [image.key + (image.values or nulls) + (
                image.version, 1 if image.values is None else 0, image.source.node.encode(),
                image.source.position.segment_id, image.source.position.offset)
                for image in target.images.values()]
        columns = target.key + target.values
        try:
            self.client.insert(
                f"{q(self.database)}.{q(target.name)}", data,
                column_names=[c.ch_name for c in columns] + [n for n, _ in CDC_WRITTEN],
                column_type_names=[c.ch_type for c in columns] + [t for _, t in CDC_WRITTEN])
        except (DataError, ProgrammingError, struct.error, TypeError, ValueError,
                OverflowError, AttributeError) as error:
            # Serialization failed on the client (nothing was sent); its message may quote
            # the value, so only its class is kept.
            raise RejectedValueError(target.name, None, None, type(error).__name__) from None


def _progress(ops: Iterable[RowOp]) -> dict[str, Position]:
    highest: dict[str, Position] = {}
    for op in ops:
        node, position = op.source.node, op.source.position
        current = highest.get(node)
        if current is None or (position.segment_id, position.offset) > \
                (current.segment_id, current.offset):
            highest[node] = position
    return highest


def apply_batch(client: Client, database: str, layout_of: Callable[[str, str], TableLayout],
                ops: Sequence[RowOp], step_id: str, partition: int) -> None:
    """Apply OPS: one insert per destination table, then one into _cdc_progress.

    layout_of(keyspace, table) -> the table's layout (its tables must exist).
    Raises RejectedValueError for a value the conversion or the client refuses."""
    batch = _Batch(client, database, layout_of)
    for op in ops:
        if isinstance(op, RangeDelete):
            batch.range_delete(op)
        elif isinstance(op, RowUpsert | RowDelete):
            batch.row(op)
        else:
            raise TypeError(f"not a row operation: {type(op).__name__}")
    batch.flush_all()
    rows = [(step_id.encode(), partition, node.encode(), p.segment_id, p.offset)
            for node, p in sorted(_progress(ops).items())]
    if rows:
        client.insert(f"{q(database)}.{q(PROGRESS_TABLE)}", rows,
                      column_names=["step_id", "sink_partition", "node", "segment_id", "offset"],
                      column_type_names=["String", "Int32", "String", "Int64", "Int32"])
