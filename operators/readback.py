"""Row images: turn a change event into the current state of what it touched (docs/adr/0003).

For each event the table's rows are read back from Cassandra by primary key, with the write time
of every column (WRITETIME for simple columns, MAXWRITETIME for non-frozen collections and
UDTs), and turned into row operations (operators/row_ops.py).

An operation's version is WHEN ITS IMAGE WAS READ (ReadClock: microseconds, strictly increasing
in a process), not a write time: an image read later states a newer state of the row, whatever
the client timestamps say. Write times cannot order images: deleting a row's newest cell, or a
late write with an old timestamp, leaves a current row whose newest write time is older than
what the destination already holds (docs/adr/0003).

A read that does not yet show the event (a replica behind, at a low consistency level) is
retried a few times; past that the image goes out versioned by its own write times (older than
any read time, so it cannot overwrite a newer image), and the stale read is counted: the next
change of the row corrects it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from cassandra import ConsistencyLevel, InvalidRequest
from cassandra.cluster import NoHostAvailable
from cassandra.metadata import protect_name
from prometheus_client import Counter

from connectors.cassandra.events import Cell, ChangeEvent, ChangeKind, ComplexCell
from connectors.cassandra.expiry import ExpiryDue
from connectors.cassandra.images import (
    Image,
    expires_at,
    image_of,
    select_items,
    static_upsert_of,
    statics_of,
    upsert_of,
)
from connectors.cassandra.schema import ClusteringOrder, ColumnKind, TableSchema
from connectors.cassandra.session import tuple_rows
from connectors.clustering import ClusteringColumn, UnsupportedRange, in_range
from operators.row_ops import (
    EXPIRY,
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
DROPPED_TABLE_CHANGES = Counter(
    "cdc_readback_dropped_table_changes",
    "Changes sent to the dead letters because their table was dropped before they could be "
    "read back", ["table"])
DROPPED_TABLE_EXPIRIES = Counter(
    "cdc_readback_dropped_table_expiries",
    "TTL expiries not read again because their table was dropped (its destination rows stay "
    "as they were)", ["table"])


class _TableQueries:
    """The prepared reads of one table version: a row by full key, a partition, its statics."""

    def __init__(self, session, table: TableSchema, consistency: int) -> None:
        self.table = table
        self.key_columns = [c.name for c in table.partition_key + table.clustering]
        self.partition_columns = [c.name for c in table.partition_key]
        self.regular = [c for c in table.columns.values() if c.kind is ColumnKind.REGULAR]
        self.static = [c for c in table.columns.values() if c.kind is ColumnKind.STATIC]
        self.name = name = f"{protect_name(table.keyspace)}.{protect_name(table.name)}"
        self.everything: Any = None  # the whole table, prepared on first use (RowReader)

        def select(columns, where: list[str], limit: str = "") -> Any:
            items = select_items(self.key_columns, columns)
            condition = " AND ".join(f"{protect_name(c)} = ?" for c in where)
            statement = session.prepare(  # identifiers quoted by the driver's protect_name
                f"SELECT {', '.join(items)} FROM {name} WHERE {condition}{limit}")  # noqa: S608
            statement.consistency_level = consistency
            return statement

        self.row = select(self.regular + self.static, self.key_columns)
        self.partition = select(self.regular + self.static, self.partition_columns)
        self.statics = select(self.static, self.partition_columns, " LIMIT 1") \
            if self.static else None
        # Many rows in one request (RowImages.read_at_once): tables whose primary key is one
        # partition-key column, prepared on first use.
        self.rows_in: Any = None

    def image(self, row, columns) -> Image:
        return image_of(row, self.key_columns, columns)


class ReadClock:
    """Versions of images: microseconds since the epoch when a read started, strictly
    increasing within the process (two reads in one microsecond still order)."""

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        self._last = 0
        self._lock = threading.Lock()

    def now(self) -> int:
        with self._lock:
            self._last = max(self._clock() // 1000, self._last + 1)
            return self._last


class RowReader:
    """Reads current rows back through a cassandra-driver session at a consistency level."""

    def __init__(self, session, *, consistency: int = ConsistencyLevel.LOCAL_QUORUM) -> None:
        self._session = session
        self._consistency = consistency
        self._queries: dict[int, _TableQueries] = {}
        self._tuples = tuple_rows(session)

    def _execute(self, statement, params: Sequence[Any] | None = None):
        return self._session.execute(statement, params, execution_profile=self._tuples)

    def _for(self, table: TableSchema) -> _TableQueries:
        queries = self._queries.get(id(table))
        if queries is None or queries.table is not table:
            queries = self._queries[id(table)] = _TableQueries(
                self._session, table, self._consistency)
        return queries

    def row(self, table: TableSchema, key: Mapping[str, Any]) -> Image | None:
        READS.labels("row").inc()
        q = self._for(table)
        found = self._execute(q.row, [key[c] for c in q.key_columns]).one()
        return None if found is None else q.image(found, q.regular + q.static)

    def rows(self, table: TableSchema, keys: Sequence[Any]) -> list[Image]:
        """The rows of KEYS (values of the table's only primary-key column) that exist, in
        one request (`key IN ?`): one round trip instead of len(KEYS)."""
        READS.labels("rows").inc()
        q = self._for(table)
        if q.rows_in is None:
            (column,) = q.key_columns
            items = select_items(q.key_columns, q.regular + q.static)
            q.rows_in = self._session.prepare(  # quoted by protect_name (select_items)
                f"SELECT {', '.join(items)} FROM {q.name} "  # noqa: S608
                f"WHERE {protect_name(column)} IN ?")
            q.rows_in.consistency_level = self._consistency
        return [q.image(found, q.regular + q.static)
                for found in self._execute(q.rows_in, [list(keys)])]

    def partition(self, table: TableSchema, partition_key: Mapping[str, Any]) -> Iterable[Image]:
        READS.labels("partition").inc()
        q = self._for(table)
        # Paged by the driver: a wide partition streams, it is not loaded whole.
        for found in self._execute(q.partition, [partition_key[c] for c in q.partition_columns]):
            yield q.image(found, q.regular + q.static)

    def table_rows(self, table: TableSchema) -> Iterable[Image]:
        """Every row of TABLE with its static columns (paged by the driver: streamed)."""
        READS.labels("table").inc()
        q = self._for(table)
        if q.everything is None:
            items = select_items(q.key_columns, q.regular + q.static)
            q.everything = self._session.prepare(  # quoted by protect_name (select_items)
                f"SELECT {', '.join(items)} FROM {q.name}")  # noqa: S608
            q.everything.consistency_level = self._consistency
        for found in self._execute(q.everything):
            yield q.image(found, q.regular + q.static)

    def statics(self, table: TableSchema, partition_key: Mapping[str, Any]) -> Image | None:
        q = self._for(table)
        if q.statics is None:
            return None
        READS.labels("static").inc()
        found = self._execute(
            q.statics, [partition_key[c] for c in q.partition_columns]).one()
        if found is None:
            return None
        image = q.image(found, q.static)
        return Image({c: image.key[c] for c in q.partition_columns}, image.values,
                     image.write_times, image.ttls)


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


def _reflects(event: ChangeEvent, image: Image | None, regular: Collection[str]) -> bool:
    """Whether a read shows at least the event's writes (see the module docstring), its
    deletes included: a replica without the tombstone still shows what it deleted, and read
    times would let that image win over the delete. REGULAR: the table's regular columns
    (what a row tombstone covers; static ones are the partition's)."""
    if image is None:  # gone: fine if something deleted it (the event or a later tombstone)
        return event.kind is not ChangeKind.UPSERT or not (
            event.liveness or _writes_a_lasting_cell(event))
    if event.kind is ChangeKind.ROW_DELETE and event.deletion is not None and \
            _after_tombstone(image, regular, event.deletion.marked_for_delete_at) is not image:
        return False  # a replica with the tombstone shows no cell it covers
    for name, cell in event.cells.items():
        written = image.write_times.get(name)
        if isinstance(cell, Cell) and cell.deleted:
            if written is not None and written <= cell.timestamp:
                return False  # a tombstone wins ties: that value is gone
        elif isinstance(cell, Cell):
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


def _writes_a_lasting_cell(event: ChangeEvent) -> bool:
    """Whether EVENT writes a value without a TTL: the row is live after it (an UPDATE has no
    liveness of its own), so a read that finds no row missed it, unless a later delete came."""
    for cell in event.cells.values():
        if isinstance(cell, Cell):
            if not cell.deleted and not cell.ttl:
                return True
        elif any(not e.deleted and not e.ttl for e in cell.elements):
            return True
    return False


def _after_tombstone(image: Image, regular: Collection[str], tombstone: int) -> Image | None:
    """IMAGE as a row tombstone at TOMBSTONE leaves it: its regular cells written at or before
    the tombstone gone (null); None when none is left, the row deleted; IMAGE itself when the
    tombstone covers none of them (a replica that has it shows none: anything else says the
    replica read lacks it). What a replica that
    has the tombstone shows, from one that has not (every other cell as it read it)."""
    gone = {n for n, t in image.write_times.items() if n in regular and t <= tombstone}
    if not gone:
        return image
    if not any(n in regular and n not in gone for n in image.write_times):
        return None
    return Image(image.key, {n: None if n in gone else v for n, v in image.values.items()},
                 {n: t for n, t in image.write_times.items() if n not in gone},
                 {n: t for n, t in image.ttls.items() if n not in gone})


def _shadowed(write_times: Iterable[int], tombstone: int) -> bool:
    """Whether a row read with these write times is one a tombstone at TOMBSTONE deletes:
    every cell as old or older (a tombstone wins ties). A row showing no write time (only
    its key, live by its INSERT) cannot be told: not shadowed."""
    times = list(write_times)
    return bool(times) and max(times) <= tombstone


class TableDropped(LookupError):
    """The table of a read Cassandra refused was dropped: its rows cannot be read back."""


@dataclass(frozen=True)
class UnreadableChange:
    """A change whose row cannot be read back, because its table is gone from the schema, for
    the dead-letter branch: kept whole (its cells, deletions and commit-log position), so an
    operator can see and replay what did not reach the destinations (a delete too)."""

    event: ChangeEvent
    reason: str


class RowImages:
    """event -> row operations, reading through a RowReader (one per worker)."""

    def __init__(self, reader: RowReader, table_of: Callable[[ChangeEvent], TableSchema | None],
                 *, attempts: int = 3, backoff_s: float = 0.05,
                 refresh: Callable[[], object] | None = None,
                 history: Callable[[UUID], Sequence[TableSchema]] | None = None,
                 exists: Callable[[UUID], bool] | None = None,
                 clock: ReadClock | None = None) -> None:
        """refresh(): re-read the schema now if it changed (schema evolution: an event naming
        a column the schema lacks, a read refused because a column was dropped).
        exists(table_id): whether the table is in the schema as last read (a refused read of
        a table that is not raises TableDropped; without it, the refusal itself).
        history(table_id): every version of a table, oldest first; with it, the first change
        captured after a table was switched to cdc = true also brings every row of the table
        (rows written before the switch were never captured)."""
        self._reader = reader
        self._table_of = table_of
        self._attempts = attempts
        self._backoff = backoff_s
        self._refresh = refresh
        self._history = history
        self._exists = exists
        self._clock = clock or ReadClock()
        self._checked: dict[UUID, TableSchema] = {}  # table id -> version checked for a switch
        self._backfilled: set[TableSchema] = set()  # versions whose switch was backfilled
        self._noted: set[tuple[str, UUID]] = set()  # (counter, table id) already logged

    def operations(self, event: ChangeEvent | ExpiryDue) -> list[RowOp | UnreadableChange]:
        if isinstance(event, ExpiryDue):
            table = self._table_of(event)
            if not isinstance(table, TableSchema) or not event.key:
                # Dropped before this process read the schema: nothing names it but its id.
                # Keyless: the expiry source did not know the table (and a refresh did not
                # find it) even if this lookup does now; without a key there is nothing to
                # read.
                name = str(event.table_id)
                self._note_dropped(DROPPED_TABLE_EXPIRIES, event.table_id, name,
                                   f"TTL expiries of table {name} are not read again from here "
                                   "on, the table is gone (its destination rows stay as they "
                                   "were)")
                return []
            try:
                return self._with_current_schema(event, table, self._expired)[0]
            except TableDropped as dropped:
                name = f"{table.keyspace}.{table.name}"
                self._note_dropped(DROPPED_TABLE_EXPIRIES, table.id, name,
                                   f"TTL expiries of {name} are not read again from here on, "
                                   f"its table is gone (its destination rows stay as they "
                                   f"were): {dropped}")
                return []
        table = self._table_of(event)
        if table is None:
            raise LookupError(f"no schema for {event.keyspace}.{event.table} ({event.table_id})")
        if self._refresh is not None and not _knows(table, event):
            # A column added after this process read the schema (e.g. decoded by another
            # process): read with the schema that has it, or its value would be missed.
            self._refresh()
            table = self._table_of(event) or table
        try:
            ops, table = self._with_current_schema(event, table, self._operations)
        except TableDropped as dropped:
            # Nothing can read its rows back. Failing the batch would fail again after every
            # restart, so the change goes to the dead letters whole: a table wrongly taken
            # for dropped (a node's schema lagging) loses nothing there either.
            name = f"{table.keyspace}.{table.name}"
            self._note_dropped(DROPPED_TABLE_CHANGES, table.id, name,
                               f"changes of {name} go to the dead letters from here on, their "
                               f"table is gone: {dropped}")
            return [UnreadableChange(event, str(dropped))]
        if self._history is not None and self._checked.get(table.id) is not table:
            self._checked[table.id] = table
            ops += self._switched_on(table, Source(event.node, event.position))
        return ops

    def _note_dropped(self, counter: Counter, table_id: UUID, name: str, message: str) -> None:
        """Count one item of a dropped table in COUNTER (labelled NAME); the first of each
        table logs MESSAGE as a warning, naming the counter: one line per table, not one per
        change or expiry."""
        counter.labels(name).inc()
        metric = counter.describe()[0].name
        if (metric, table_id) not in self._noted:
            self._noted.add((metric, table_id))
            log.warning("%s (counted in %s_total)", message, metric)

    def _with_current_schema(self, item: ChangeEvent | ExpiryDue, table: TableSchema,
                             read: Callable[[Any, TableSchema], list[RowOp]]
                             ) -> tuple[list[RowOp], TableSchema]:
        """(READ(item, table), the table read with). Prepared reads naming a column dropped
        since fail (InvalidRequest): then the schema is read again, and so is the row.
        Raises TableDropped if the table was dropped meanwhile."""
        try:
            return read(item, table), table
        except (InvalidRequest, NoHostAvailable) as error:
            if self._refresh is None:
                raise
            if isinstance(error, InvalidRequest):
                self._refresh()
                fresh = self._table_of(item)
                if isinstance(fresh, TableSchema) and fresh is not table:
                    return read(item, fresh), fresh
            # The registry keeps a dropped table's last version (old entries still decode):
            # whether it is still in system_schema tells. Any other refusal, and any other
            # NoHostAvailable (Cassandra down), is raised as it was.
            if self._gone(table):
                raise TableDropped(f"{table.keyspace}.{table.name} ({table.id}) was dropped; "
                                   "its rows cannot be read back") from None
            raise

    def _gone(self, table: TableSchema, *, attempts: int = 6, wait_s: float = 0.5) -> bool:
        """Whether TABLE is no longer in the schema. A read refused while the table is being
        dropped (a prepare fails with "Unknown CF" on every host) can come before
        system_schema says so: it is asked again for a few seconds before answering no."""
        if self._refresh is None or self._exists is None:
            return False
        for attempt in range(attempts):
            self._refresh()
            if not self._exists(table.id):
                return True
            if attempt + 1 < attempts:
                time.sleep(wait_s)
        return False

    def can_read_at_once(self, event: ChangeEvent) -> bool:
        """Whether EVENT's image may come from `read_at_once`: a change of a whole row of a
        table keyed by one partition-key column of a type whose decoded and read values are
        the same Python values, with nothing else to do first (schema known, no backfill)."""
        if not isinstance(event, ChangeEvent) or event.is_static or event.clustering or \
                event.kind in (ChangeKind.PARTITION_DELETE, ChangeKind.RANGE_DELETE):
            return False
        table = self._table_of(event)
        return (table is not None and not table.clustering and len(table.partition_key) == 1
                and table.partition_key[0].type.kind in _SAME_VALUE_KINDS
                and _knows(table, event)
                and (self._history is None or self._checked.get(table.id) is table))

    def read_at_once(self, events: Sequence[ChangeEvent], *, chunk: int = 100,
                     map_chunks: Callable[..., Iterable] = map) -> list[list[RowOp] | None]:
        """For EVENTS (each `can_read_at_once`), their operations from reads of up to CHUNK
        rows per request (MAP_CHUNKS(fn, chunks) may run the requests at once); None for an
        event the reads do not serve: its row absent (a delete, or a key that did not match)
        or not reflecting it yet. Those go through `operations`, with its retries."""
        wanted: dict[TableSchema, dict[Any, None]] = {}
        tables = []
        for event in events:
            table = self._table_of(event)
            assert table is not None
            tables.append(table)
            wanted.setdefault(table, {})[event.partition_key[table.partition_key[0].name]] = None
        work = [(table, keys[i:i + chunk]) for table, found in wanted.items()
                for keys in [list(found)] for i in range(0, len(keys), chunk)]

        def read(item: tuple[TableSchema, list]) -> tuple[TableSchema, int, list[Image]]:
            table, keys = item
            as_of = self._clock.now()
            return table, as_of, self._reader.rows(table, keys)

        try:
            results = list(map_chunks(read, work))
        except InvalidRequest:  # a column dropped since: `operations` refreshes the schema
            return [None] * len(events)
        except NoHostAvailable:
            if any(self._gone(table) for table in wanted):
                return [None] * len(events)  # `operations` sends the dropped table's away
            raise
        images: dict[tuple[UUID, Any], tuple[Image, int]] = {}
        for table, as_of, found in results:
            column = table.partition_key[0].name
            for image in found:
                images[(table.id, image.key[column])] = (image, as_of)
        out: list[list[RowOp] | None] = []
        for event, table in zip(events, tables, strict=True):
            hit = images.get((table.id, event.partition_key[table.partition_key[0].name]))
            if hit is None or not _reflects(event, hit[0], table.regular_names):
                out.append(None)
                continue
            out.append([self._upsert(table, hit[0], event, Source(event.node, event.position),
                                     as_of=hit[1])])
        return out

    def _switched_on(self, table: TableSchema, source: Source) -> list[RowOp]:
        """Every row of TABLE if this is its first change since it was switched to cdc = true
        (read now, after the switch was seen: it covers whatever the capture skipped),
        versioned by when the scan began: any image read later wins over it. The scan runs
        inside this call (paged by the driver): a large table holds this worker up meanwhile."""
        assert self._history is not None
        versions = self._history(table.id)
        off = [i for i, v in enumerate(versions) if not v.cdc]
        if not table.cdc or not off or off[-1] + 1 >= len(versions):
            return []
        switch = versions[off[-1] + 1]
        if switch in self._backfilled:
            return []
        self._backfilled.add(switch)
        log.info("%s.%s was switched to cdc = true: reading its existing rows",
                 table.keyspace, table.name)
        ops: list[RowOp] = []
        statics: dict[tuple, RowUpsert] = {}
        has_statics = table_has_statics(table)
        as_of = self._clock.now()
        for image in self._reader.table_rows(table):
            # A partition holding only its static row reads as one row with null clustering.
            if not any(image.key[c.name] is None for c in table.clustering):
                ops.append(upsert_of(table, image, source, version_if_unknown=lambda: 0,
                                     version=as_of))
            if has_statics:
                pk = {c.name: image.key[c.name] for c in table.partition_key}
                key = tuple(pk.values())
                if key not in statics:
                    static = static_upsert_of(table, pk, statics_of(table, image), source,
                                              version=as_of)
                    if static is not None:
                        statics[key] = static
        return ops + list(statics.values())

    def _operations(self, event: ChangeEvent, table: TableSchema) -> list[RowOp]:
        source = Source(event.node, event.position)
        if event.kind in (ChangeKind.PARTITION_DELETE, ChangeKind.RANGE_DELETE):
            return self._range(event, table, source)
        if event.is_static:
            return self._static(event, table, source)
        return self._row(event, table, source)

    def _row(self, event: ChangeEvent, table: TableSchema, source: Source) -> list[RowOp]:
        key = {**event.partition_key, **event.clustering}
        image, as_of = self._read_until_reflected(event, lambda: self._reader.row(table, key),
                                                  table.regular_names)
        if image is not None and as_of is None and event.kind is ChangeKind.ROW_DELETE and \
                event.deletion is not None:
            # Stale: the replicas read lack the delete. The row as the delete leaves it.
            image = _after_tombstone(image, table.regular_names,
                                     event.deletion.marked_for_delete_at)
        if image is None:
            return [RowDelete(table.keyspace, table.name, key, as_of or _event_time(event),
                              source)]
        return [self._upsert(table, image, event, source, as_of=as_of)]

    def _expired(self, due: ExpiryDue, table: TableSchema) -> list[RowOp]:
        """A row (or static row) whose TTL ran out, read again: as it is now, or deleted;
        versioned by this read, so it wins over every image read before it."""
        as_of = self._clock.now()
        if due.static:
            statics = static_upsert_of(table, due.partition_key,
                                       self._reader.statics(table, due.partition_key), EXPIRY,
                                       version=as_of)
            return [statics or RowDelete(table.keyspace, table.name, dict(due.partition_key),
                                         as_of, EXPIRY, static=True)]
        image = self._reader.row(table, due.key)
        if image is None:
            return [RowDelete(table.keyspace, table.name, dict(due.key), as_of, EXPIRY)]
        return [upsert_of(table, image, EXPIRY, version_if_unknown=lambda: as_of,
                          version=as_of)]

    def _static(self, event: ChangeEvent, table: TableSchema, source: Source) -> list[RowOp]:
        key = dict(event.partition_key)
        image, as_of = self._read_until_reflected(
            event, lambda: self._reader.statics(table, key), table.regular_names)
        if image is None or not image.write_times:
            return [RowDelete(table.keyspace, table.name, key, as_of or _event_time(event),
                              source, static=True)]
        return [RowUpsert(table.keyspace, table.name, key, image.values, as_of or image.version,
                          source, static=True, expires=expires_at(image.ttls.values(), as_of))]

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
            self._clock.now(), source, include_static=whole)]
        # Then every row of the partition as it is now, read after the delete's version: the
        # survivors (written after the tombstone) go back in; rows outside the range are
        # re-stated, which is harmless. A row of the range whose every cell the tombstone
        # covers comes from a replica that has not received it yet: Cassandra has deleted it,
        # so it is left out (a stale read), not sent back in versioned by this read.
        tombstone = event.deletion.marked_for_delete_at
        covered = self._covered(table, ops[0], whole)
        regular = table.regular_names
        as_of = self._clock.now()
        for image in self._reader.partition(table, event.partition_key):
            after = _after_tombstone(image, regular, tombstone) if covered(image.key) \
                else image
            if after is not image:
                # A replica without the tombstone: the cells it covers are gone in
                # Cassandra, the ones written after it are not.
                STALE_READS.inc()
                if after is None:
                    continue
                image = after
            ops.append(self._upsert(table, image, event, source, with_statics=False,
                                    as_of=as_of))
        if whole and table_has_statics(table):
            image = self._reader.statics(table, event.partition_key)
            if image is not None and _shadowed(image.write_times.values(), tombstone):
                STALE_READS.inc()
                image = None
            statics = static_upsert_of(table, event.partition_key, image, source,
                                       version=as_of)
            if statics is not None:
                ops.append(statics)
        return ops

    @staticmethod
    def _covered(table: TableSchema, delete: RangeDelete, whole: bool
                 ) -> Callable[[Mapping[str, Any]], bool]:
        """Whether a row (its key) lies in what DELETE deletes, in Cassandra's clustering
        order; a bound this cannot evaluate covers nothing (the row is then sent back in)."""
        if whole:
            return lambda key: True
        columns = [ClusteringColumn(c.name, c.type, c.order or ClusteringOrder.ASC)
                   for c in table.clustering]
        try:
            return in_range(columns, delete.start, delete.end)
        except UnsupportedRange:
            return lambda key: False

    def _upsert(self, table: TableSchema, image: Image, event: ChangeEvent, source: Source,
                *, with_statics: bool = False, as_of: int | None = None) -> RowUpsert:
        # Without a read time (a stale read): the write times; a row holding only its primary
        # key shows none: it exists, so its liveness is at least the event's.
        op = upsert_of(table, image, source, version_if_unknown=lambda: _event_time(event),
                       with_statics=with_statics, version=as_of)
        liveness = event.liveness
        if liveness is not None and liveness.ttl and liveness.local_expiration_time:
            # An INSERT ... USING TTL: the row's liveness expires too, and no column read
            # shows it (a row of only key columns then vanishes). A second late, as above.
            ends = (liveness.local_expiration_time + 1) * 1_000_000
            op = dataclasses.replace(op, expires=min(ends, op.expires or ends))
        return op

    def _read_until_reflected(self, event: ChangeEvent, read: Callable[[], Image | None],
                              regular: Collection[str]) -> tuple[Image | None, int | None]:
        """(image, the time its read started) once a read reflects EVENT; after the last
        attempt (image, None): a stale image, versioned by its own write times. REGULAR: the
        table's regular columns."""
        as_of = self._clock.now()
        image = read()
        for attempt in range(1, self._attempts):
            if _reflects(event, image, regular):
                return image, as_of
            time.sleep(self._backoff * attempt)
            as_of = self._clock.now()
            image = read()
        if _reflects(event, image, regular):
            return image, as_of
        STALE_READS.inc()
        # Debug, not warning: a row inserted then deleted looks the same (absent) as a row a
        # lagging replica has not received; the counter is what operators watch.
        log.debug("read of %s.%s did not reflect the change at %s:%s after %d attempts",
                  event.keyspace, event.table, event.node, event.position, self._attempts)
        return image, None


# Partition-key types whose values decode from the commit log as the very Python values the
# driver reads back (str, int, bool, bytes, UUID): a read row is matched to its event by value.
_SAME_VALUE_KINDS = frozenset({"ascii", "text", "varchar", "int", "bigint", "smallint",
                               "tinyint", "varint", "boolean", "blob", "uuid", "timeuuid"})


def _knows(table: TableSchema, event: ChangeEvent) -> bool:
    """Whether TABLE (this version) has, or had dropped, every column EVENT writes."""
    columns, dropped = table.columns, table.dropped
    return all(name in columns or name in dropped for name in event.cells)


def table_has_statics(table: TableSchema) -> bool:
    return any(c.kind is ColumnKind.STATIC for c in table.columns.values())
