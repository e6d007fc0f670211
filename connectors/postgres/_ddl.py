"""CREATE ... IF NOT EXISTS of a table's destination objects and of the progress table, and
their evolution when the Cassandra schema changes (docs/schema-evolution.md).

Several sink partitions (threads or processes) may meet a new table at once; CREATE TABLE IF
NOT EXISTS alone can then fail on the catalog's unique index, so all DDL of a schema runs in
one transaction holding a transaction-level advisory lock keyed by the schema name.

Evolution is additive: a column the layout has and the table lacks is added (ADD COLUMN IF
NOT EXISTS, nullable, no default: no table rewrite); a column Cassandra dropped stays in the
table with its values and is no longer written; the view is replaced to show exactly the
current columns (CREATE OR REPLACE VIEW cannot remove or reorder columns: then DROP VIEW and
CREATE VIEW, in the same transaction, so readers never see it missing).
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from psycopg import sql

from connectors.postgres._layout import CDC_COLUMNS, Column, LayoutError, TableLayout
from connectors.table_layout import refuse_another_key

__all__ = ["PROGRESS_TABLE", "TableHook", "ensure_progress_table", "ensure_table"]

# after_create(conn, schema, layout): more DDL for a table's objects, run by `ensure_table` in
# its transaction, under its lock, after the CREATEs (e.g. the TimescaleDB sink's hypertable).
# It must be idempotent: every partition that meets the table runs it.
TableHook = Callable[[psycopg.Connection, str, TableLayout], None]

PROGRESS_TABLE = "_cdc_progress"
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended({}, 0))"


def _lock(conn: psycopg.Connection, schema: str) -> None:
    conn.execute(sql.SQL(_LOCK).format(sql.Literal(f"cdc-sink-ddl:{schema}")))


def _columns(columns: tuple[Column, ...]) -> list[sql.Composable]:
    return [sql.SQL("{} {}").format(sql.Identifier(c.pg_name), sql.SQL(c.pg_type))
            for c in columns]


def _create(schema: str, name: str, columns: tuple[Column, ...], key: tuple[Column, ...]
            ) -> sql.Composed:
    definitions = _columns(columns) + [
        sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(d)) for n, d in CDC_COLUMNS]
    definitions.append(sql.SQL("PRIMARY KEY ({})").format(
        sql.SQL(", ").join(sql.Identifier(c.pg_name) for c in key)))
    return sql.SQL("CREATE TABLE IF NOT EXISTS {}.{} ({})").format(
        sql.Identifier(schema), sql.Identifier(name), sql.SQL(", ").join(definitions))


def _set_fillfactor(conn: psycopg.Connection, schema: str, table: str, fillfactor: int
                    ) -> None:
    """Set TABLE's fillfactor to FILLFACTOR if it has another: a table just created (none set
    means PostgreSQL's 100), or made before the setting changed (pages already written keep
    their packing). A table the sink's role does not own: LayoutError naming the option."""
    row = conn.execute(
        "SELECT c.reloptions FROM pg_catalog.pg_class c"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s", (schema, table)).fetchone()
    options = dict(o.split("=", 1) for o in (row[0] if row and row[0] else ()))
    if int(options.get("fillfactor", 100)) == fillfactor:
        return
    try:
        with conn.transaction():  # a savepoint: the error below is the one raised
            conn.execute(sql.SQL("ALTER TABLE {}.{} SET (fillfactor = {})").format(
                sql.Identifier(schema), sql.Identifier(table), sql.Literal(fillfactor)))
    except psycopg.errors.InsufficientPrivilege:
        raise LayoutError(
            f"{schema}.{table}: cannot set its fillfactor to {fillfactor} (options.fillfactor):"
            " the sink's role does not own the table; have its owner run ALTER TABLE ... SET"
            " (fillfactor = ...), or leave the option unset") from None


def _view(schema: str, layout: TableLayout) -> sql.Composed:
    def ref(alias: str, c: Column) -> sql.Composable:
        return sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c.pg_name))

    def names(alias: str, cols: tuple[Column, ...]) -> list[sql.Composable]:
        return [ref(alias, c) for c in cols]

    def nulls(cols: tuple[Column, ...]) -> list[sql.Composable]:
        return [sql.SQL("NULL::{} AS {}").format(sql.SQL(c.pg_type), sql.Identifier(c.pg_name))
                for c in cols]

    rows = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(layout.rows_table))
    select_rows = names("r", layout.key) + names("s", layout.static) + \
        names("r", layout.regular) + [sql.SQL("r._cdc_version")]
    if layout.static_table is None:
        body = sql.SQL("SELECT {} FROM {} r WHERE NOT r._cdc_deleted").format(
            sql.SQL(", ").join(select_rows), rows)
    else:
        statics = sql.SQL("{}.{}").format(sql.Identifier(schema),
                                          sql.Identifier(layout.static_table))
        join = sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(ref("s", c), ref("r", c)) for c in layout.partition)
        select_static_only = names("s", layout.partition) + nulls(layout.clustering) + \
            names("s", layout.static) + nulls(layout.regular) + [sql.SQL("s._cdc_version")]
        body = sql.SQL(
            "SELECT {} FROM {} r LEFT JOIN {} s ON {} AND NOT s._cdc_deleted"
            " WHERE NOT r._cdc_deleted"
            " UNION ALL SELECT {} FROM {} s WHERE NOT s._cdc_deleted AND NOT EXISTS"
            " (SELECT 1 FROM {} r WHERE {} AND NOT r._cdc_deleted)").format(
            sql.SQL(", ").join(select_rows), rows, statics, join,
            sql.SQL(", ").join(select_static_only), statics, rows, join)
    return sql.SQL("CREATE OR REPLACE VIEW {}.{} AS {}").format(
        sql.Identifier(schema), sql.Identifier(layout.view), body)


def _columns_and_key(conn: psycopg.Connection, schema: str, table: str) -> dict[str, bool]:
    """TABLE's columns, each with whether its primary key holds it (one catalog read, as
    ClickHouse's system.columns gives both: connectors/clickhouse/_ddl.py)."""
    rows = conn.execute(
        "SELECT a.attname, COALESCE(a.attnum = ANY(i.indkey), false)"
        " FROM pg_catalog.pg_attribute a"
        " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary"
        " WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped",
        (schema, table)).fetchall()
    return dict(rows)


def _add_missing(conn: psycopg.Connection, schema: str, table: str,
                 key: tuple[Column, ...], values: tuple[Column, ...]) -> None:
    """Add the value columns TABLE lacks; a key column it lacks (Cassandra renamed a
    primary-key column) cannot be added to a primary key: LayoutError naming it. So is a
    primary key other than the layout's (a table dropped and created again with another
    key): its rows would be matched by the wrong columns."""
    existing = _columns_and_key(conn, schema, table)
    missing_key = [c.pg_name for c in key if c.pg_name not in existing]
    if missing_key:
        raise LayoutError(
            f"{schema}.{table} has no primary-key column {missing_key[0]!r}: was a "
            "primary-key column renamed in Cassandra? Rename the destination column "
            "(ALTER TABLE ... RENAME COLUMN) to match, then restart (docs/schema-evolution.md)")
    refuse_another_key(f"{schema}.{table}", {n for n, in_key in existing.items() if in_key},
                       {c.pg_name for c in key}, key="primary key",
                       harm="Its rows would be matched by the wrong columns")
    for c in values:
        if c.pg_name not in existing:
            conn.execute(sql.SQL("ALTER TABLE {}.{} ADD COLUMN IF NOT EXISTS {} {}").format(
                sql.Identifier(schema), sql.Identifier(table), sql.Identifier(c.pg_name),
                sql.SQL(c.pg_type)))


def _replace_view(conn: psycopg.Connection, schema: str, layout: TableLayout) -> None:
    try:
        with conn.transaction():  # a savepoint: its failure leaves the outer one usable
            conn.execute(_view(schema, layout))
    except psycopg.errors.InvalidTableDefinition:
        # Columns removed or reordered (a column added in the middle, one dropped):
        # CREATE OR REPLACE refuses; a view other views depend on stops here, by name.
        conn.execute(sql.SQL("DROP VIEW IF EXISTS {}.{}").format(
            sql.Identifier(schema), sql.Identifier(layout.view)))
        conn.execute(_view(schema, layout))


def ensure_table(conn: psycopg.Connection, schema: str, layout: TableLayout,
                 after_create: TableHook | None = None, fillfactor: int | None = None) -> None:
    """Create the rows table, the static companion and the view if missing, evolve them to
    LAYOUT if they exist (missing columns added, the view replaced, the tables' FILLFACTOR
    set if given and it differs), then run AFTER_CREATE in the same transaction (commits; an
    error in it rolls everything back)."""
    with conn.transaction():
        _lock(conn, schema)
        tables = [(layout.rows_table, layout.key, layout.regular)]
        if layout.static_table is not None:
            tables.append((layout.static_table, layout.partition, layout.static))
        for table, key, values in tables:
            conn.execute(_create(schema, table, key + values, key))
            _add_missing(conn, schema, table, key, values)
            if fillfactor is not None:
                _set_fillfactor(conn, schema, table, fillfactor)
        _replace_view(conn, schema, layout)
        if after_create is not None:
            after_create(conn, schema, layout)


def ensure_progress_table(conn: psycopg.Connection, schema: str) -> None:
    """_cdc_progress: the highest source position applied, per sink step, partition and node."""
    with conn.transaction():
        _lock(conn, schema)
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.{} ("
            " step_id text NOT NULL, sink_partition integer NOT NULL, node text NOT NULL,"
            " segment_id bigint NOT NULL, \"offset\" integer NOT NULL,"
            " updated_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (step_id, sink_partition, node))").format(
            sql.Identifier(schema), sql.Identifier(PROGRESS_TABLE)))
