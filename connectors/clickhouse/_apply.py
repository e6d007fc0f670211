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
Cassandra's order (connectors.clustering), and adds tombstones at op.version for the
covered keys whose stored version is <= op.version, and for the covered images gathered
earlier in the same batch. The batch's highest source positions are returned for
_cdc_progress, recorded only after the data is in (connectors/clickhouse/_progress.py).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from clickhouse_connect.driver.binding import quote_identifier as q
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DataError, ProgrammingError

from connectors.cassandra.events import Position
from connectors.clickhouse._layout import CDC_WRITTEN, TableLayout
from connectors.clustering import in_range
from connectors.row_batch import Gatherer, Target, key_slot
from connectors.row_sink import Image, key_fingerprint
from connectors.row_sink import RejectedValueError as SharedRejectedValueError
from operators.row_ops import RangeDelete, RowOp

__all__ = ["RejectedValueError", "apply_batch", "key_fingerprint"]


class RejectedValueError(SharedRejectedValueError):
    sink = "ClickHouse"


class _Batch(Gatherer):
    rejected = RejectedValueError

    def __init__(self, client: Client, database: str,
                 layout_of: Callable[[str, str], TableLayout]):
        super().__init__(layout_of)
        self.client = client
        self.database = database

    def range_delete(self, op: RangeDelete) -> None:
        layout = self.layout_of(op.keyspace, op.table)
        contains = in_range(layout.clustering_columns(), op.start, op.end)
        rows = self.target(layout, static=False)
        pk = self.convert_key(rows.name, layout.partition, op.partition_key)
        width = len(pk)

        def covered(key: tuple) -> bool:
            clustering = {c.name: c.stored(v)
                          for c, v in zip(layout.clustering, key[width:], strict=True)}
            return contains(clustering)

        # image.key, not the dict key: row_batch.key_slot stands NaN in with a placeholder, and
        # compares the partition's (NaN equal to NaN, as in Cassandra).
        partition = key_slot(pk)
        tombstones = [image.key for image in rows.images.values()
                      if key_slot(image.key[:width]) == partition and image.version <= op.version
                      and covered(image.key)]
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
            elif isinstance(v, float) and v != v:  # noqa: PLR0124 - NaN: `= nan` is never true
                conditions.append(f"isNaN({q(c.ch_name)})")
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

    def flush(self, target: Target) -> None:
        data = target.columns()
        if data is None:
            return
        self.wrote(target, data)
        # Node names as bytes, each encoded once (the driver would encode every row's).
        nodes = data[-3]
        encoded = {node: node.encode() for node in set(nodes)}
        data[-3] = list(map(encoded.__getitem__, nodes))
        # Column-oriented: the gathered columns go as they are (no per-row tuples); the
        # driver writes _cdc_deleted's bools as UInt8 0/1.
        columns = target.key + target.values
        try:
            self.client.insert(
                f"{q(self.database)}.{q(target.name)}", data,
                column_names=[c.ch_name for c in columns] + [n for n, _ in CDC_WRITTEN],
                column_type_names=[c.ch_type for c in columns] + [t for _, t in CDC_WRITTEN],
                column_oriented=True)
        except (DataError, ProgrammingError, struct.error, TypeError, ValueError,
                OverflowError, AttributeError) as error:
            # Serialization failed on the client (nothing was sent); its message may quote
            # the value, so only its class is kept.
            raise RejectedValueError(target.name, None, None, type(error).__name__) from None


def apply_batch(client: Client, database: str, layout_of: Callable[[str, str], TableLayout],
                ops: Sequence[RowOp]) -> dict[str, Position]:
    """Apply OPS: one insert per destination table. Returns per node the highest source
    position among OPS, for _cdc_progress (connectors/clickhouse/_progress.py) once they are in.

    layout_of(keyspace, table) -> the table's layout (its tables must exist).
    Raises RejectedValueError for a value the conversion or the client refuses."""
    batch = _Batch(client, database, layout_of)
    batch.apply(ops)
    return batch.positions(ops)
