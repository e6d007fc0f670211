"""TimescaleSink: PostgresSink whose rows tables become hypertables (see the package docs)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from connectors.postgres import LayoutError, PostgresSink, PostgresSinkSettings, TableLayout
from connectors.postgres._sink import MaskedTypesLookup, SchemaLookup
from connectors.postgres._values import DESTINATION
from connectors.secrets import SecretResolver
from connectors.timescale import _extension as ext
from connectors.timescale._settings import Compression, TimescaleSettings, whole_days
from connectors.type_map import typemap

__all__ = ["Hypertable", "TimescaleMissingError", "TimescaleSink", "TimescaleVersionError",
           "hypertable_of", "statements"]

log = logging.getLogger(__name__)


def _time_types() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """From connectors/typemap.json's 'timescale' entry (data, not code): the CQL types a time
    column may have, and their PostgreSQL column types. Its 'columns' must be 'postgres':
    TimescaleSink is PostgresSink, whose layout uses the 'postgres' column of every type."""
    rule = typemap()["timescale"]
    if rule["columns"] != DESTINATION:
        raise ValueError(f"connectors/typemap.json: timescale.columns must be "
                         f"{DESTINATION!r} (TimescaleSink writes PostgreSQL's columns), "
                         f"not {rule['columns']!r}")
    cql = tuple(rule["time_column_types"])
    return cql, tuple(typemap()["types"][t][DESTINATION] for t in cql)


# CQL types a time column may have, and their PostgreSQL types ("timestamptz", "date").
TIME_CQL_TYPES, TIME_TYPES = _time_types()


class TimescaleMissingError(RuntimeError):
    """The timescaledb extension is not in the sink's database (when_missing="fail")."""


class TimescaleVersionError(RuntimeError):
    """The installed TimescaleDB cannot do what the settings ask."""


@dataclass(frozen=True)
class Hypertable:
    """What one rows table needs, in PostgreSQL names."""

    table: str  # the rows table
    time_column: str
    chunk_interval: str | None
    compress_after: str | None
    segment_by: tuple[str, ...]
    drop_after: str | None


def hypertable_of(layout: TableLayout, settings: TimescaleSettings) -> Hypertable:
    """The hypertable of LAYOUT's rows table per SETTINGS; LayoutError for a configuration the
    table cannot satisfy. No I/O.

    The time column must be in the Cassandra primary key: a row's identity may not change
    with its time, and then the destination primary key (which is Cassandra's) includes it,
    as TimescaleDB requires of every unique index, ON CONFLICT's included."""
    name = f"{layout.keyspace}.{layout.table}"
    time_name = settings.time_columns.get(name)
    if time_name is None:
        raise LayoutError(f"{name}: no time column configured (TimescaleSettings.time_columns)")
    by_name = {c.name: c for c in layout.key + layout.regular + layout.static}
    column = by_name.get(time_name)
    if column is None:
        raise LayoutError(f"{name}: time column {time_name!r} is not a column of the table")
    if column not in layout.key:
        raise LayoutError(
            f"{name}: time column {time_name!r} is not part of the Cassandra primary key "
            f"({', '.join(c.name for c in layout.key)}): a row's identity would change with "
            "its time; choose a partition-key or clustering column")
    if column.pg_type not in TIME_TYPES:
        masked = " after masking" if column.masked else ""
        raise LayoutError(f"{name}: time column {time_name!r} is {column.pg_type}{masked} in "
                          f"PostgreSQL; it must be a CQL {' or '.join(TIME_CQL_TYPES)}")
    chunk_interval = settings.chunk_intervals.get(name)
    if column.pg_type == "date" and chunk_interval is not None and \
            not whole_days(chunk_interval):
        raise LayoutError(f"{name}: chunk interval {chunk_interval!r} is not a whole number of "
                          f"days, which TimescaleDB requires of a date time column "
                          f"({time_name!r})")
    compression: Compression | None = settings.compression.get(name)
    segment_by: tuple[str, ...] = ()
    if compression is not None:
        rows_columns = {c.name: c for c in layout.key + layout.regular}
        for wanted in compression.segment_by:
            if wanted not in rows_columns:
                where = " (a static column: not in the rows table)" \
                    if wanted in by_name else ""
                raise LayoutError(f"{name}: segment_by column {wanted!r} is not a column of "
                                  f"the rows table{where}")
        segment_by = tuple(rows_columns[c].pg_name for c in compression.segment_by)
    return Hypertable(layout.rows_table, column.pg_name, chunk_interval,
                      compression.after if compression else None, segment_by,
                      settings.retention.get(name))


def statements(schema: str, table: Hypertable, at: str | None = None) -> list[sql.Composed]:
    """Every extension statement TABLE may need, in order (the compression ALTER is skipped at
    run time when compression is already enabled), calling the extension's functions in AT,
    its schema (ExtensionState.schema)."""
    found = [ext.create_hypertable(schema, table.table, table.time_column, table.chunk_interval,
                                   at)]
    # A policy whose age the configuration changed is removed, then added again: the settings
    # are what the configuration says now (one it no longer names is left as it is).
    if table.compress_after is not None:
        found.append(ext.enable_compression(schema, table.table, table.segment_by))
        found.append(ext.remove_changed_policy("compression", schema, table.table,
                                               table.compress_after, at))
        found.append(ext.add_compression_policy(schema, table.table, table.compress_after, at))
    if table.drop_after is not None:
        found.append(ext.remove_changed_policy("retention", schema, table.table,
                                               table.drop_after, at))
        found.append(ext.add_retention_policy(schema, table.table, table.drop_after, at))
    return found


def _missing_message(state: ext.ExtensionState) -> str:
    if state.available is not None:
        return (f"the timescaledb extension is not created in database {state.database!r}: "
                f"the server offers version {state.available}; run CREATE EXTENSION "
                f"timescaledb; in {state.database!r} as its owner or a superuser (the "
                "server needs shared_preload_libraries = 'timescaledb'), or set "
                "TimescaleSettings.when_missing='plain' for plain PostgreSQL tables")
    return (f"the timescaledb extension is not available on the server of database "
            f"{state.database!r}: install TimescaleDB (e.g. the timescaledb-2-postgresql-<major> "
            "package), add it to shared_preload_libraries, restart PostgreSQL and run "
            f"CREATE EXTENSION timescaledb; in {state.database!r}, or set "
            "TimescaleSettings.when_missing='plain' for plain PostgreSQL tables")


def make_hook(settings: TimescaleSettings, lock_wait_ms: int
              ) -> Callable[[psycopg.Connection, str, TableLayout], None]:
    """The PostgresSink table hook: runs in ensure_table's transaction, after the CREATEs.
    LOCK_WAIT_MS: the sink's statement timeout, which bounds its waits for locks, kept as the
    lock timeout while the statement timeout is lifted for create_hypertable."""

    def after_create(conn: psycopg.Connection, schema: str, layout: TableLayout) -> None:
        table = hypertable_of(layout, settings)
        state = ext.detect(conn)
        planned = statements(schema, table, state.schema)
        if state.installed is None:
            if settings.when_missing == "fail":
                raise TimescaleMissingError(_missing_message(state))
            log.warning("timescaledb is not installed in database %r: %s.%s is a plain "
                        "PostgreSQL table; skipped: %s", state.database, schema, table.table,
                        "; ".join(s.as_string(conn) for s in planned))
            return
        if table.compress_after is not None and \
                ext.version_tuple(state.installed) < ext.MIN_VERSION_COMPRESSED_UPSERTS:
            raise TimescaleVersionError(
                f"compression of {schema}.{table.table} needs TimescaleDB >= 2.11 (compressed "
                f"chunks refuse the sink's upserts before it); database {state.database!r} "
                f"has {state.installed}: upgrade it or drop the compression setting")
        # Making a populated table (one written while the extension was missing) a hypertable
        # moves its rows, which can take longer than the sink's statement timeout: cancelled,
        # it is retried as transient, and would move them again for ever, holding the table.
        # Waits for locks stay bounded (the statement timeout bounded them before).
        conn.execute(sql.SQL("SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = {}")
                     .format(sql.Literal(f"{lock_wait_ms}ms")))
        conn.execute(planned[0])
        rest = planned[1:]
        if table.compress_after is not None:
            enabled = conn.execute(ext.compression_enabled(schema, table.table)).fetchone()
            if enabled is not None and enabled[0]:
                rest = rest[1:]  # already on: settings of compressed chunks cannot change
        for statement in rest:
            conn.execute(statement)

    return after_create


class TimescaleSink(PostgresSink):
    """`PostgresSink` (same items, partitions, transactions, version guards, progress) whose
    rows tables are TimescaleDB hypertables, per `TimescaleSettings`.

    Static companions stay plain tables (they have no time column); the "__current" view is
    PostgreSQL's. A table's configuration is checked when a partition first meets it
    (`hypertable_of`): its DDL transaction then rolls back and nothing is created.
    """

    def __init__(self, settings: PostgresSinkSettings, timescale: TimescaleSettings,
                 schema_of: SchemaLookup, masked_types_of: MaskedTypesLookup | None = None,
                 resolver_factory: Callable[[], SecretResolver] = SecretResolver, *,
                 schema_refresh: Callable[[], object] | None = None):
        super().__init__(settings, schema_of, masked_types_of, resolver_factory,
                         table_hook=make_hook(timescale, settings.statement_timeout_ms),
                         schema_refresh=schema_refresh,
                         # INSERT ... ON CONFLICT: what compressed chunks accept since
                         # TimescaleDB 2.11 (MIN_VERSION_COMPRESSED_UPSERTS). MERGE with an
                         # UPDATE action is refused on hypertables with compression enabled
                         # (timescale/timescaledb#6214, still so in 2.29), and some releases
                         # refused MERGE on any hypertable (#4930, lifted by #5150).
                         merge=False)
        self.timescale = timescale
