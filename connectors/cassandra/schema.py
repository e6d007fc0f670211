"""Table schemas as the mutation decoder needs them, loaded from system_schema, with history.

- `TableSchema` (frozen): keyspace, name, table id, partition key and clustering columns in order
  (clustering with ASC/DESC), regular and static columns by name with their CQL types, dropped
  columns (name -> drop time in microseconds and type), and whether cdc is on.
- `build_schemas(rows)`: pure function from system_schema rows to TableSchemas (no network).
- `fetch_schema_rows(session, keyspaces)`: the thin network part (cassandra-driver Session).
- `SchemaRegistry`: indexes tables by id, re-reads system_schema when the decoder meets an
  unknown table id or column name (throttled), and keeps every version it has seen, so an old
  commit-log entry still decodes with the schema it was written under: a column the current
  schema dropped is found in an older version (or in dropped_columns), and a dropped table
  keeps its last known schema.

A PartitionUpdate has no length prefix, so the decoder needs the schema of every table of a
keyspace that holds a CDC table, not only of the CDC tables: the registry loads whole keyspaces.
Tables of other keyspaces are known by id only (`IgnoredTable`), so their mutations are skipped
without a refresh.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Protocol
from uuid import UUID

from connectors.cassandra.values import CqlType, CqlTypeError, UdtDefinition, parse_cql_type

__all__ = [
    "ClusteringOrder",
    "ColumnKind",
    "ColumnSpec",
    "DroppedColumn",
    "IgnoredTable",
    "SchemaError",
    "SchemaRegistry",
    "SchemaRows",
    "SchemaSource",
    "StaticSchemas",
    "TableSchema",
    "build_schemas",
    "fetch_schema_rows",
    "fetch_schema_version",
]

log = logging.getLogger(__name__)

SYSTEM_KEYSPACES = frozenset({
    "system", "system_schema", "system_auth", "system_distributed", "system_traces",
    "system_views", "system_virtual_schema", "system_cluster_metadata",
})


class SchemaError(ValueError):
    """system_schema rows that do not describe a usable table."""


class ColumnKind(enum.Enum):
    PARTITION_KEY = "partition_key"
    CLUSTERING = "clustering"
    REGULAR = "regular"
    STATIC = "static"


class ClusteringOrder(enum.Enum):
    ASC = "asc"
    DESC = "desc"


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    cql_type: str
    type: CqlType = field(repr=False)
    kind: ColumnKind
    position: int = -1
    order: ClusteringOrder | None = None

    @property
    def is_complex(self) -> bool:
        return self.type.is_complex


@dataclass(frozen=True)
class DroppedColumn:
    """A row of system_schema.dropped_columns. Cells written at or before `dropped_time`
    (microseconds, as cell timestamps) belong to the dropped column and are ignored by
    Cassandra. `type` is what system_schema recorded: UDTs are expanded to frozen tuples."""

    name: str
    cql_type: str
    type: CqlType = field(repr=False)
    dropped_time: int
    kind: ColumnKind = ColumnKind.REGULAR

    @property
    def is_complex(self) -> bool:
        return self.type.is_complex


@dataclass(frozen=True, eq=False)
class TableSchema:
    """One version of one table. Compared by identity; `signature` says whether two versions
    describe the same schema."""

    keyspace: str
    name: str
    id: UUID
    partition_key: tuple[ColumnSpec, ...]
    clustering: tuple[ColumnSpec, ...]
    columns: Mapping[str, ColumnSpec]
    dropped: Mapping[str, DroppedColumn] = field(default_factory=dict)
    cdc: bool = False
    is_counter: bool = False
    is_view: bool = False
    signature: tuple = field(default=(), repr=False)

    @cached_property
    def regular_names(self) -> frozenset[str]:
        """The names of its regular columns (kept: read for every row image)."""
        return frozenset(n for n, c in self.columns.items() if c.kind is ColumnKind.REGULAR)

    def column(self, name: str) -> ColumnSpec | DroppedColumn | None:
        """A regular or static column, else the dropped column of that name, else None."""
        spec = self.columns.get(name)
        if spec is not None:
            return spec
        return self.dropped.get(name)

    def __repr__(self) -> str:
        return (f"TableSchema({self.keyspace}.{self.name} id={self.id} cdc={self.cdc} "
                f"pk={[c.name for c in self.partition_key]} "
                f"ck={[c.name for c in self.clustering]} columns={sorted(self.columns)})")


@dataclass(frozen=True)
class IgnoredTable:
    """A table whose keyspace is not loaded: its mutations are skipped, not errors."""

    keyspace: str
    name: str
    id: UUID


class SchemaSource(Protocol):
    """What the mutation decoder asks of a schema registry."""

    @property
    def generation(self) -> int:
        """Changes whenever any table's schema changes (decoders drop their caches then)."""
        ...

    def table(self, table_id: UUID) -> TableSchema | IgnoredTable | None: ...

    def column_history(self, table_id: UUID, name: str) -> ColumnSpec | DroppedColumn | None:
        """A column of that name in an older version of the table, if any."""
        ...

    def refresh(self, table_id: UUID | None = None) -> bool:
        """Re-read the schema if allowed now (throttled); True if it was re-read."""
        ...

    # Optional (SchemaRegistry has it; decoders use it when present):
    # refresh_if_changed(*, max_age: float) -> bool: re-read the schema if the cluster's
    # schema version moved since the last read, probing at most once per max_age seconds.


# --- building from rows -------------------------------------------------------------------------

Row = Mapping[str, Any]


@dataclass(frozen=True)
class SchemaRows:
    """system_schema content: rows as mappings of column name -> value.

    all_tables: (keyspace_name, table_name, id) of every table and view of every keyspace;
    the other lists only for the loaded keyspaces."""

    all_tables: Sequence[Row]
    tables: Sequence[Row]
    views: Sequence[Row]
    columns: Sequence[Row]
    types: Sequence[Row]
    dropped_columns: Sequence[Row]


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _dropped_time_us(value: Any) -> int:
    """dropped_time is a CQL timestamp (milliseconds); Cassandra compares it in microseconds."""
    if isinstance(value, int):
        return value * 1000
    if hasattr(value, "timestamp"):  # the driver's naive-UTC datetime
        from calendar import timegm
        return (timegm(value.utctimetuple()) * 1000 + value.microsecond // 1000) * 1000
    raise SchemaError(f"unexpected dropped_time {value!r}")


def build_schemas(rows: SchemaRows) -> tuple[dict[UUID, TableSchema], dict[UUID, IgnoredTable]]:
    """Turn system_schema rows into TableSchemas (loaded keyspaces) and IgnoredTables (the rest).

    A table whose columns cannot be parsed is left out and logged: its mutations will then
    produce error records naming it, instead of the whole keyspace failing to load."""
    udts: dict[str, dict[str, UdtDefinition]] = {}
    for r in rows.types:
        udts.setdefault(r["keyspace_name"], {})[r["type_name"]] = UdtDefinition(
            r["keyspace_name"], r["type_name"], tuple(r["field_names"] or ()),
            tuple(r["field_types"] or ()))
    columns: dict[tuple[str, str], list[Row]] = {}
    for r in rows.columns:
        columns.setdefault((r["keyspace_name"], r["table_name"]), []).append(r)
    dropped: dict[tuple[str, str], list[Row]] = {}
    for r in rows.dropped_columns:
        dropped.setdefault((r["keyspace_name"], r["table_name"]), []).append(r)

    caches: dict[str, dict[str, CqlType]] = {}
    tables: dict[UUID, TableSchema] = {}
    described = [(r, False) for r in rows.tables] + [(r, True) for r in rows.views]
    for r, is_view in described:
        ks = r["keyspace_name"]
        name = r["view_name"] if is_view else r["table_name"]
        try:
            schema = _build_table(
                r, ks, name, is_view, columns.get((ks, name), []), dropped.get((ks, name), []),
                udts.get(ks, {}), caches.setdefault(ks, {}))
        except (SchemaError, CqlTypeError) as error:
            log.error("cannot use the schema of %s.%s: %s", ks, name, error)
            continue
        tables[schema.id] = schema

    ignored: dict[UUID, IgnoredTable] = {}
    for r in rows.all_tables:
        table_id = _uuid(r["id"])
        if table_id not in tables:
            ignored[table_id] = IgnoredTable(r["keyspace_name"], r["table_name"], table_id)
    return tables, ignored


def _build_table(r: Row, ks: str, name: str, is_view: bool, column_rows: list[Row],
                 dropped_rows: list[Row], udts: Mapping[str, UdtDefinition],
                 cache: dict[str, CqlType]) -> TableSchema:
    pk: list[ColumnSpec] = []
    ck: list[ColumnSpec] = []
    regular: dict[str, ColumnSpec] = {}
    for c in column_rows:
        kind = ColumnKind(c["kind"])
        cql = c["type"]
        order_text = (c.get("clustering_order") or "none").lower()
        spec = ColumnSpec(
            name=c["column_name"], cql_type=cql, type=parse_cql_type(cql, ks, udts, _cache=cache),
            kind=kind, position=int(c.get("position", -1)),
            order=ClusteringOrder(order_text) if kind is ColumnKind.CLUSTERING else None)
        if kind is ColumnKind.PARTITION_KEY:
            pk.append(spec)
        elif kind is ColumnKind.CLUSTERING:
            ck.append(spec)
        else:
            regular[spec.name] = spec
    if not pk:
        raise SchemaError("no partition key columns")
    pk.sort(key=lambda s: s.position)
    ck.sort(key=lambda s: s.position)
    if [s.position for s in pk] != list(range(len(pk))) or \
            [s.position for s in ck] != list(range(len(ck))):
        raise SchemaError("key column positions are not 0..n-1")

    drops: dict[str, DroppedColumn] = {}
    for d in dropped_rows:
        cql = d["type"]
        drops[d["column_name"]] = DroppedColumn(
            name=d["column_name"], cql_type=cql, type=parse_cql_type(cql, ks, udts),
            dropped_time=_dropped_time_us(d["dropped_time"]),
            kind=ColumnKind((d.get("kind") or "regular").lower()))

    flags = set(r.get("flags") or ())
    is_counter = "counter" in flags or any(s.type.is_counter for s in regular.values())
    cdc = bool(r.get("cdc")) and not is_view
    signature = (
        tuple((s.name, s.kind.value, s.type.cql, s.order and s.order.value)
              for s in pk + ck + sorted(regular.values(), key=lambda s: s.name)),
        tuple(sorted((d.name, d.type.cql, d.dropped_time, d.kind.value) for d in drops.values())),
        cdc, is_counter, is_view,
    )
    return TableSchema(
        keyspace=ks, name=name, id=_uuid(r["id"]), partition_key=tuple(pk), clustering=tuple(ck),
        columns=MappingProxyType(regular), dropped=MappingProxyType(drops), cdc=cdc,
        is_counter=is_counter, is_view=is_view, signature=signature)


# --- network ------------------------------------------------------------------------------------

def fetch_schema_rows(session: Any, keyspaces: Iterable[str] | None = None) -> SchemaRows:
    """Read system_schema through a cassandra-driver Session.

    keyspaces: the keyspaces whose tables must decode (every keyspace holding a CDC table);
    None = every non-system keyspace. Uses bound parameters only."""
    def rows(query: str, *params: Any) -> list[dict[str, Any]]:
        result = session.execute(query, params or None)
        return [r._asdict() if hasattr(r, "_asdict") else dict(r) for r in result]

    all_tables = rows("SELECT keyspace_name, table_name, id FROM system_schema.tables")
    all_tables += [{"keyspace_name": v["keyspace_name"], "table_name": v["view_name"],
                    "id": v["id"]}
                   for v in rows("SELECT keyspace_name, view_name, id FROM system_schema.views")]
    if keyspaces is None:
        names = sorted({r["keyspace_name"] for r in all_tables} - SYSTEM_KEYSPACES)
    else:
        names = sorted(set(keyspaces))
    tables: list[dict] = []
    views: list[dict] = []
    columns: list[dict] = []
    types: list[dict] = []
    dropped: list[dict] = []
    for ks in names:
        tables += rows("SELECT keyspace_name, table_name, id, cdc, flags FROM system_schema.tables"
                       " WHERE keyspace_name = %s", ks)
        views += rows("SELECT keyspace_name, view_name, id FROM system_schema.views"
                      " WHERE keyspace_name = %s", ks)
        columns += rows("SELECT keyspace_name, table_name, column_name, kind, position,"
                        " clustering_order, type FROM system_schema.columns"
                        " WHERE keyspace_name = %s", ks)
        types += rows("SELECT keyspace_name, type_name, field_names, field_types"
                      " FROM system_schema.types WHERE keyspace_name = %s", ks)
        dropped += rows("SELECT keyspace_name, table_name, column_name, dropped_time, kind, type"
                        " FROM system_schema.dropped_columns WHERE keyspace_name = %s", ks)
    return SchemaRows(all_tables, tables, views, columns, types, dropped)


def fetch_schema_version(session: Any) -> Any:
    """The schema version of the node the driver asks (system.local): it changes with every
    schema change the node has applied, and costs one row."""
    row = session.execute("SELECT schema_version FROM system.local").one()
    if row is None:
        return None
    return row._asdict()["schema_version"] if hasattr(row, "_asdict") else row["schema_version"]


# --- registry -----------------------------------------------------------------------------------

class SchemaRegistry:
    """Thread-safe table schemas by id, with every version seen so far.

    fetch: returns fresh SchemaRows (e.g. `lambda: fetch_schema_rows(session, ["shop"])`).
    min_refresh_interval: seconds between two re-reads triggered by unknown ids or columns, so
    a stream of undecodable entries cannot turn into a stream of system_schema queries.
    schema_version: a cheap probe of the cluster's schema version (`from_session`: one row of
    system.local). With it, a throttled refresh still re-reads when the version moved (a
    table created or altered a moment after the last read must not make its changes
    undecodable), and `refresh_if_changed` can watch for schema changes (a table switched to
    cdc = true) without re-reading system_schema each time.
    Nothing is read at construction; the first lookup loads.
    """

    def __init__(self, fetch: Callable[[], SchemaRows], *, min_refresh_interval: float = 2.0,
                 clock: Callable[[], float] = time.monotonic,
                 schema_version: Callable[[], Any] | None = None):
        if min_refresh_interval < 0:
            raise ValueError("min_refresh_interval must be >= 0")
        self._fetch = fetch
        self._interval = min_refresh_interval
        self._clock = clock
        self._lock = threading.RLock()
        self._current: dict[UUID, TableSchema] = {}
        self._live: frozenset[UUID] = frozenset()  # the ids in system_schema at the last read
        self._ignored: dict[UUID, IgnoredTable] = {}
        self._history: dict[UUID, list[TableSchema]] = {}
        self._loaded = False
        self._last_refresh: float | None = None
        self._generation = 0
        self._schema_version = schema_version
        self._version: Any = None  # the probe's answer just before the last read
        self._last_probe: float | None = None
        self._missing: dict[UUID, float] = {}  # ids not in system_schema, as of when

    @classmethod
    def from_session(cls, session: Any, keyspaces: Iterable[str] | None = None,
                     **kwargs: Any) -> SchemaRegistry:
        names = None if keyspaces is None else tuple(keyspaces)
        kwargs.setdefault("schema_version", lambda: fetch_schema_version(session))
        return cls(lambda: fetch_schema_rows(session, names), **kwargs)

    @property
    def generation(self) -> int:
        return self._generation

    def load(self) -> None:
        """Read system_schema now (unthrottled)."""
        with self._lock:
            # Probed before the rows: a change made while they are read shows up next time.
            version = self._probe()
            tables, ignored = build_schemas(self._fetch())
            self._version = version
            self._last_refresh = self._clock()
            self._loaded = True
            changed = False
            for table_id, schema in tables.items():
                versions = self._history.setdefault(table_id, [])
                if not versions or versions[-1].signature != schema.signature:
                    versions.append(schema)
                    changed = True
                self._current[table_id] = versions[-1]
            # A table that disappeared keeps its last version: old entries still decode.
            self._live = frozenset(tables)
            if self._ignored != ignored:
                changed = True
            self._ignored = ignored
            if changed:
                self._generation += 1

    def refresh(self, table_id: UUID | None = None) -> bool:
        with self._lock:
            now = self._clock()
            if self._loaded and self._last_refresh is not None and \
                    now - self._last_refresh < self._interval:
                # Throttled, but a schema that moved is read at once. An id already found
                # missing lately (a dropped table's old entries) is not probed again.
                missing_since = self._missing.get(table_id) if table_id is not None else None
                if missing_since is not None and now - missing_since < self._interval:
                    return False
                if not self._moved():
                    self._note_missing(table_id, now)
                    return False
            log.info("re-reading system_schema (unknown %s)", table_id or "column")
            self.load()
            self._note_missing(table_id, now)
            return True

    def _note_missing(self, table_id: UUID | None, now: float) -> None:
        if table_id is not None and table_id not in self._current and \
                table_id not in self._ignored:
            if len(self._missing) > 10_000:
                self._missing.clear()
            self._missing[table_id] = now

    def refresh_if_changed(self, *, max_age: float = 0.0) -> bool:
        """Re-read system_schema if the cluster's schema version moved since the last read
        (one probe at most every MAX_AGE seconds); True if it was re-read. Without a
        schema_version probe this is the throttled `refresh()`."""
        with self._lock:
            if not self._loaded:
                self.load()
                return True
            if self._schema_version is None:
                return self.refresh()
            if self._last_probe is not None and self._clock() - self._last_probe < max_age:
                return False
            if not self._moved():
                return False
            log.info("re-reading system_schema (schema version changed)")
            self.load()
            return True

    def _probe(self) -> Any:
        if self._schema_version is None:
            return None
        self._last_probe = self._clock()
        return self._schema_version()

    def _moved(self) -> bool:
        """Whether the schema version differs from the one of the last read (False: no probe)."""
        return self._schema_version is not None and self._probe() != self._version

    def table(self, table_id: UUID) -> TableSchema | IgnoredTable | None:
        with self._lock:
            if not self._loaded:
                self.load()
            schema = self._current.get(table_id)
            if schema is not None:
                return schema
            return self._ignored.get(table_id)

    def exists(self, table_id: UUID) -> bool:
        """Whether the table was in system_schema when it was last read (`table` still gives
        the last version of a dropped one)."""
        with self._lock:
            if not self._loaded:
                self.load()
            return table_id in self._live

    def history(self, table_id: UUID) -> tuple[TableSchema, ...]:
        """Every version seen, oldest first (the last is the current one)."""
        with self._lock:
            return tuple(self._history.get(table_id, ()))

    def column_history(self, table_id: UUID, name: str) -> ColumnSpec | DroppedColumn | None:
        with self._lock:
            for schema in reversed(self._history.get(table_id, ())):
                spec = schema.columns.get(name)
                if spec is not None:
                    return spec
            return None

    def tables(self) -> tuple[TableSchema, ...]:
        with self._lock:
            if not self._loaded:
                self.load()
            return tuple(self._current.values())


class StaticSchemas:
    """A fixed SchemaSource (tests, offline decoding of saved segments)."""

    generation = 0

    def __init__(self, tables: Iterable[TableSchema] = (),
                 ignored: Iterable[IgnoredTable] = ()):
        self._tables = {t.id: t for t in tables}
        self._ignored = {t.id: t for t in ignored}

    def table(self, table_id: UUID) -> TableSchema | IgnoredTable | None:
        return self._tables.get(table_id) or self._ignored.get(table_id)

    def column_history(self, table_id: UUID, name: str) -> ColumnSpec | DroppedColumn | None:
        return None

    def refresh(self, table_id: UUID | None = None) -> bool:
        return False

    def refresh_if_changed(self, *, max_age: float = 0.0) -> bool:
        return False
