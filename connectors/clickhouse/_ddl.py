"""CREATE ... IF NOT EXISTS of a table's ClickHouse objects and of the progress table.

One statement each, valid on 18.16 and on current servers: no ADD COLUMN IF NOT EXISTS, TTL,
CODEC, LowCardinality or ReplacingMergeTree(ver, is_deleted). The view reads through FINAL
(merges versions at query time; 18.16 accepts FINAL inside a view).

View "<keyspace>__<table>__current" (what users query):
    SELECT key, statics, regulars, _cdc_version
    FROM (SELECT ... FROM rows FINAL WHERE _cdc_deleted = 0)
    ANY LEFT JOIN (SELECT partition key, statics FROM static FINAL WHERE _cdc_deleted = 0)
    USING (partition key)
Without static columns it is the first SELECT alone. Unlike the PostgreSQL view, a partition
holding only a static row (no clustering rows) does not appear in it: query
"<keyspace>__<table>__static" FINAL WHERE _cdc_deleted = 0 for those.

Schema evolution (docs/schema-evolution.md), with what 18.16 has: a column the layout has and
a table lacks is added (`ALTER TABLE ... ADD COLUMN`, Nullable: old parts read NULL, nothing
is rewritten; 18.16 has no IF NOT EXISTS, so system.columns is read first and a concurrent
add by another partition is tolerated); a column Cassandra dropped stays, no longer written.
A view whose columns differ from the layout's is dropped and created again (no CREATE OR
REPLACE VIEW on 18.16): queries of the view fail for that moment.
"""

from __future__ import annotations

from clickhouse_connect.driver.binding import quote_identifier as q
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from connectors.clickhouse._layout import CDC_COLUMNS, Column, LayoutError, TableLayout
from connectors.table_layout import refuse_another_key

__all__ = ["PROGRESS_TABLE", "create_statements", "ensure_progress_table", "ensure_table"]

PROGRESS_TABLE = "_cdc_progress"


def _table(database: str, name: str) -> str:
    return f"{q(database)}.{q(name)}"


def _create(database: str, name: str, columns: tuple[Column, ...], key: tuple[Column, ...]
            ) -> str:
    definitions = [f"{q(c.ch_name)} {c.ch_type}" for c in columns]
    definitions += [f"{q(n)} {d}" for n, d in CDC_COLUMNS]
    order = ", ".join(q(c.ch_name) for c in key)
    return (f"CREATE TABLE IF NOT EXISTS {_table(database, name)} ({', '.join(definitions)})"
            f" ENGINE = ReplacingMergeTree({q('_cdc_version')}) ORDER BY ({order})")


def _view(database: str, layout: TableLayout) -> str:
    def names(cols: tuple[Column, ...]) -> list[str]:
        return [q(c.ch_name) for c in cols]

    # Every identifier is quoted by quote_identifier (S608 cannot see it).
    rows_cols = ", ".join(names(layout.key + layout.regular) + ["_cdc_version"])
    rows_table = _table(database, layout.rows_table)
    rows = f"SELECT {rows_cols} FROM {rows_table} FINAL WHERE _cdc_deleted = 0"  # noqa: S608
    if layout.static_table is None:
        body = rows
    else:
        static_cols = ", ".join(names(layout.partition + layout.static))
        static_table = _table(database, layout.static_table)
        statics = f"SELECT {static_cols} FROM {static_table} FINAL"  # noqa: S608
        statics += " WHERE _cdc_deleted = 0"
        selected = names(layout.key) + names(layout.static) + names(layout.regular) + \
            ["_cdc_version"]
        using = ", ".join(names(layout.partition))
        body = f"SELECT {', '.join(selected)} FROM ({rows})"  # noqa: S608
        body += f" ANY LEFT JOIN ({statics}) USING ({using})"
    return f"CREATE VIEW IF NOT EXISTS {_table(database, layout.view)} AS {body}"


def create_statements(database: str, layout: TableLayout) -> list[str]:
    """The statements `ensure_table` runs, in order (also for operators' reference)."""
    statements = [_create(database, layout.rows_table, layout.key + layout.regular, layout.key)]
    if layout.static_table is not None:
        statements.append(_create(database, layout.static_table,
                                  layout.partition + layout.static, layout.partition))
    statements.append(_view(database, layout))
    return statements


def _columns_of(client: Client, database: str, table: str) -> list[str]:
    return [name for name, _ in _columns_and_sort_key(client, database, table)]


def _columns_and_sort_key(client: Client, database: str, table: str) -> list[tuple[str, int]]:
    return [(name, in_key) for name, in_key in client.query(
        "SELECT name, is_in_sorting_key FROM system.columns WHERE database = %(d)s AND"
        " table = %(t)s", parameters={"d": database, "t": table}).result_rows]


def _add_missing(client: Client, database: str, table: str, key: tuple[Column, ...],
                 values: tuple[Column, ...]) -> None:
    """Add the value columns TABLE lacks; a key column it lacks (Cassandra renamed a
    primary-key column; 18.16 cannot rename columns) is a LayoutError naming it. So is a sort
    key other than the layout's (a table dropped and created again with another primary key):
    FINAL would merge rows Cassandra keeps apart, or keep apart versions of one row."""
    columns = _columns_and_sort_key(client, database, table)
    existing = {name for name, _ in columns}
    missing_key = [c.ch_name for c in key if c.ch_name not in existing]
    if missing_key:
        raise LayoutError(
            f"{database}.{table} has no sort-key column {missing_key[0]!r}: was a primary-key "
            "column renamed in Cassandra? ClickHouse 18.16 cannot rename a column; recreate "
            "the table (docs/schema-evolution.md)")
    refuse_another_key(f"{database}.{table}", {name for name, in_key in columns if in_key},
                       {c.ch_name for c in key}, key="sort key",
                       harm="FINAL would merge the wrong rows")
    for c in values:
        if c.ch_name in existing:
            continue
        try:
            client.command(f"ALTER TABLE {_table(database, table)} ADD COLUMN "
                           f"{q(c.ch_name)} {c.ch_type}")
        except DatabaseError:
            # Another partition may have added it meanwhile (no IF NOT EXISTS on 18.16).
            if c.ch_name not in _columns_of(client, database, table):
                raise


def _view_columns(layout: TableLayout) -> list[str]:
    static = layout.static if layout.static_table is not None else ()
    return [c.ch_name for c in layout.key + static + layout.regular] + ["_cdc_version"]


def ensure_table(client: Client, database: str, layout: TableLayout) -> None:
    """Create the rows table, the static companion and the view if missing; evolve them to
    LAYOUT if they exist (missing columns added, a view with other columns recreated)."""
    *tables, view = create_statements(database, layout)
    for statement in tables:
        client.command(statement)
    _add_missing(client, database, layout.rows_table, layout.key, layout.regular)
    if layout.static_table is not None:
        _add_missing(client, database, layout.static_table, layout.partition, layout.static)
    current = _columns_of(client, database, layout.view)
    if current and current != _view_columns(layout):
        client.command(f"DROP TABLE IF EXISTS {_table(database, layout.view)}")
    client.command(view)


def ensure_progress_table(client: Client, database: str) -> None:
    """_cdc_progress: the highest source position applied per sink step, partition and node.

    One row per (step_id, sink_partition, node, segment_id), the offset as the
    ReplacingMergeTree version: a position is (segment_id, offset) and segment ids are
    milliseconds (~41 bits), so segment_id * 2^32 + offset would overflow 64 bits; the
    (segment_id, offset) order is kept exactly instead. A replay's lower offset never wins;
    the current position of a node is the row with the highest (segment_id, offset):
        SELECT node, segment_id, offset FROM _cdc_progress FINAL WHERE step_id = ...
        AND sink_partition = ... ORDER BY segment_id DESC, offset DESC LIMIT 1 BY node
    The table grows by one row per commit-log segment and node (32 MiB of log by default)."""
    client.command(
        f"CREATE TABLE IF NOT EXISTS {_table(database, PROGRESS_TABLE)} ("
        " step_id String, sink_partition Int32, node String, segment_id Int64,"
        " `offset` Int32, updated_at DateTime DEFAULT now())"
        " ENGINE = ReplacingMergeTree(`offset`)"
        " ORDER BY (step_id, sink_partition, node, segment_id)")
