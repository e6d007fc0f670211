"""Row images: turn a change event into the current state of what it touched (docs/adr/0003).

For each event the table's rows are read back from Cassandra by primary key, with the write time
of every column (WRITETIME for simple columns, MAXWRITETIME for non-frozen collections and
UDTs), and turned into row operations (operators/row_ops.py) versioned by those write times.

A read that does not yet show the event (a replica behind, at a low consistency level) is
retried a few times; past that the image goes out with the version it really has, never the
event's, and the stale read is counted: the next change of the row corrects it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.metadata import protect_name
from prometheus_client import Counter

from connectors.cassandra.events import Cell, ChangeEvent, ChangeKind, ComplexCell
from connectors.cassandra.schema import ColumnKind, TableSchema
from operators.row_ops import (
    ClusteringBound,
    RangeDelete,
    RowDelete,
    RowOp,
    RowUpsert,
    Source,
)

log = logging.getLogger(__name__)

STALE_READS = Counter("cdc_readback_stale_reads",
                      "Row images sent although the read did not yet reflect the change")
READS = Counter("cdc_readback_reads", "Reads of current rows from Cassandra", ["scope"])


@dataclass(frozen=True)
class Image:
    """One row as read: its key, its column values and the largest write time among them."""

    key: dict[str, Any]
    values: dict[str, Any]
    write_times: dict[str, int]

    @property
    def version(self) -> int | None:
        return max(self.write_times.values(), default=None)


class _TableQueries:
    """The prepared reads of one table version: a row by full key, a partition, its statics."""

    def __init__(self, session, table: TableSchema, consistency: int) -> None:
        self.table = table
        self.key_columns = [c.name for c in table.partition_key + table.clustering]
        self.partition_columns = [c.name for c in table.partition_key]
        self.regular = [c for c in table.columns.values() if c.kind is ColumnKind.REGULAR]
        self.static = [c for c in table.columns.values() if c.kind is ColumnKind.STATIC]
        name = f"{protect_name(table.keyspace)}.{protect_name(table.name)}"

        def select(columns, where: list[str], limit: str = "") -> Any:
            items = [protect_name(c) for c in self.key_columns] + [
                part for c in columns for part in (
                    protect_name(c.name),
                    f"{'maxwritetime' if c.is_complex else 'writetime'}({protect_name(c.name)})")]
            condition = " AND ".join(f"{protect_name(c)} = ?" for c in where)
            statement = session.prepare(  # identifiers quoted by the driver's protect_name
                f"SELECT {', '.join(items)} FROM {name} WHERE {condition}{limit}")  # noqa: S608
            statement.consistency_level = consistency
            return statement

        self.row = select(self.regular + self.static, self.key_columns)
        self.partition = select(self.regular + self.static, self.partition_columns)
        self.statics = select(self.static, self.partition_columns, " LIMIT 1") \
            if self.static else None

    def image(self, row, columns) -> Image:
        key = {name: getattr(row, name) for name in self.key_columns}
        values, times = {}, {}
        for index, column in enumerate(columns):
            base = len(self.key_columns) + 2 * index
            values[column.name] = row[base]
            if row[base + 1] is not None:
                times[column.name] = row[base + 1]
        return Image(key, values, times)


class RowReader:
    """Reads current rows back through a cassandra-driver session at a consistency level."""

    def __init__(self, session, *, consistency: int = ConsistencyLevel.LOCAL_QUORUM) -> None:
        self._session = session
        self._consistency = consistency
        self._queries: dict[int, _TableQueries] = {}

    def _for(self, table: TableSchema) -> _TableQueries:
        queries = self._queries.get(id(table))
        if queries is None or queries.table is not table:
            queries = self._queries[id(table)] = _TableQueries(
                self._session, table, self._consistency)
        return queries

    def row(self, table: TableSchema, key: Mapping[str, Any]) -> Image | None:
        READS.labels("row").inc()
        q = self._for(table)
        found = self._session.execute(q.row, [key[c] for c in q.key_columns]).one()
        return None if found is None else q.image(found, q.regular + q.static)

    def partition(self, table: TableSchema, partition_key: Mapping[str, Any]) -> Iterable[Image]:
        READS.labels("partition").inc()
        q = self._for(table)
        # Paged by the driver: a wide partition streams, it is not loaded whole.
        for found in self._session.execute(q.partition,
                                           [partition_key[c] for c in q.partition_columns]):
            yield q.image(found, q.regular + q.static)

    def statics(self, table: TableSchema, partition_key: Mapping[str, Any]) -> Image | None:
        q = self._for(table)
        if q.statics is None:
            return None
        READS.labels("static").inc()
        found = self._session.execute(
            q.statics, [partition_key[c] for c in q.partition_columns]).one()
        if found is None:
            return None
        image = q.image(found, q.static)
        return Image({c: image.key[c] for c in q.partition_columns}, image.values,
                     image.write_times)


def _event_time(event: ChangeEvent) -> int:
    """The newest timestamp the event carries: liveness, tombstones, cells, elements."""
    times = [event.liveness.timestamp] if event.liveness else []
    if event.deletion is not None:
        times.append(event.deletion.marked_for_delete_at)
    for cell in event.cells.values():
        if isinstance(cell, Cell):
            times.append(cell.timestamp)
        else:
            times += [element.timestamp for element in cell.elements]
            if cell.deletion is not None:
                times.append(cell.deletion.marked_for_delete_at)
    return max(times, default=0)


def _reflects(event: ChangeEvent, image: Image | None) -> bool:
    """Whether a read shows at least the event's writes (see the module docstring)."""
    if image is None:  # gone: fine if something deleted it (the event or a later tombstone)
        return event.kind is not ChangeKind.UPSERT or not event.liveness
    for name, cell in event.cells.items():
        written = image.write_times.get(name)
        if isinstance(cell, Cell) and not cell.deleted:
            if written is None and image.values.get(name) is not None:
                return False
            if written is not None and written < cell.timestamp:
                return False
        elif isinstance(cell, ComplexCell) and cell.elements and not any(
                e.deleted for e in cell.elements):
            newest = max(e.timestamp for e in cell.elements)
            if written is not None and written < newest:
                return False
    return True


class RowImages:
    """event -> row operations, reading through a RowReader (one per worker)."""

    def __init__(self, reader: RowReader, table_of: Callable[[ChangeEvent], TableSchema | None],
                 *, attempts: int = 3, backoff_s: float = 0.05) -> None:
        self._reader = reader
        self._table_of = table_of
        self._attempts = attempts
        self._backoff = backoff_s

    def operations(self, event: ChangeEvent) -> list[RowOp]:
        table = self._table_of(event)
        if table is None:
            raise LookupError(f"no schema for {event.keyspace}.{event.table} ({event.table_id})")
        source = Source(event.node, event.position)
        if event.kind in (ChangeKind.PARTITION_DELETE, ChangeKind.RANGE_DELETE):
            return self._range(event, table, source)
        if event.is_static:
            return self._static(event, table, source)
        return self._row(event, table, source)

    def _row(self, event: ChangeEvent, table: TableSchema, source: Source) -> list[RowOp]:
        key = {**event.partition_key, **event.clustering}
        image = self._read_until_reflected(event, lambda: self._reader.row(table, key))
        if image is None:
            return [RowDelete(table.keyspace, table.name, key, _event_time(event), source)]
        return [self._upsert(table, image, event, source)]

    def _static(self, event: ChangeEvent, table: TableSchema, source: Source) -> list[RowOp]:
        key = dict(event.partition_key)
        image = self._read_until_reflected(event, lambda: self._reader.statics(table, key))
        if image is None or not image.write_times:
            return [RowDelete(table.keyspace, table.name, key, _event_time(event), source,
                              static=True)]
        return [RowUpsert(table.keyspace, table.name, key, image.values, image.version, source,
                          static=True)]

    def _range(self, event: ChangeEvent, table: TableSchema, source: Source) -> list[RowOp]:
        assert event.deletion is not None
        whole = event.kind is ChangeKind.PARTITION_DELETE
        start = event.range_start
        end = event.range_end
        ops: list[RowOp] = [RangeDelete(
            table.keyspace, table.name, dict(event.partition_key),
            ClusteringBound(dict(start.clustering) if start and not whole else {},
                            start.inclusive if start and not whole else True),
            ClusteringBound(dict(end.clustering) if end and not whole else {},
                            end.inclusive if end and not whole else True),
            event.deletion.marked_for_delete_at, source, include_static=whole)]
        # Then every row of the partition as it is now: the survivors (newer than the
        # tombstone) go back in; rows outside the range are re-stated, which is harmless.
        for image in self._reader.partition(table, event.partition_key):
            ops.append(self._upsert(table, image, event, source, with_statics=False))
        if whole and table_has_statics(table):
            statics = self._reader.statics(table, event.partition_key)
            if statics is not None and statics.write_times:
                ops.append(RowUpsert(table.keyspace, table.name, dict(event.partition_key),
                                     statics.values, statics.version, source, static=True))
        return ops

    def _upsert(self, table: TableSchema, image: Image, event: ChangeEvent, source: Source,
                *, with_statics: bool = False) -> RowUpsert:
        regular = {c.name for c in table.columns.values() if c.kind is ColumnKind.REGULAR}
        values = {n: v for n, v in image.values.items() if with_statics or n in regular}
        times = [t for n, t in image.write_times.items() if with_statics or n in regular]
        # A row holding only its primary key shows no write time: it exists, so its liveness
        # is at least the event's (the version then says "as of this event").
        version = max(times, default=None)
        if version is None:
            version = _event_time(event)
        return RowUpsert(table.keyspace, table.name, image.key, values, version, source)

    def _read_until_reflected(self, event: ChangeEvent, read: Callable[[], Image | None]):
        image = read()
        for attempt in range(1, self._attempts):
            if _reflects(event, image):
                return image
            time.sleep(self._backoff * attempt)
            image = read()
        if not _reflects(event, image):
            STALE_READS.inc()
            # Debug, not warning: a row inserted then deleted looks the same (absent) as a row a
            # lagging replica has not received; the counter is what operators watch.
            log.debug("read of %s.%s did not reflect the change at %s:%s after %d attempts",
                        event.keyspace, event.table, event.node, event.position, self._attempts)
        return image


def table_has_statics(table: TableSchema) -> bool:
    return any(c.kind is ColumnKind.STATIC for c in table.columns.values())
