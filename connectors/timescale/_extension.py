"""Every TimescaleDB-specific statement of the sink, and nothing else.

All statements are psycopg.sql compositions (Identifier / Literal), built by the functions
below so that tests can check their exact text without a TimescaleDB server:

- `DETECT`: the database name, the installed extension version (pg_extension), the version
  the server could install (pg_available_extensions) and the schema the extension's functions
  are in: every call names it, as the pipeline's role may not have it on its search_path (the
  local stack's role has only its own schema there);
- `create_hypertable`: ``create_hypertable(..., if_not_exists => TRUE, migrate_data => TRUE)``
  with the named argument ``time_column_name`` (which selects the classic signature; 2.13+
  also has a ``dimension`` overload);
- `compression_enabled`: whether compression is already on (TimescaleDB refuses to change
  compression settings once chunks are compressed, so an existing setting is left as is);
- `enable_compression`: ``ALTER TABLE ... SET (timescaledb.compress,
  timescaledb.compress_segmentby = '...')``;
- `add_compression_policy` / `add_retention_policy`: with ``if_not_exists => TRUE``, after
  `remove_changed_policy` removed one of another age (else it would be kept: TimescaleDB only
  warns).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

__all__ = [
    "DETECT",
    "EXTENSION",
    "MIN_VERSION_COMPRESSED_UPSERTS",
    "ExtensionState",
    "add_compression_policy",
    "add_retention_policy",
    "compression_enabled",
    "create_hypertable",
    "detect",
    "enable_compression",
    "version_tuple",
]

EXTENSION = "timescaledb"
# The first release whose compressed chunks accept INSERT ... ON CONFLICT DO UPDATE.
MIN_VERSION_COMPRESSED_UPSERTS = (2, 11)

DETECT = sql.SQL(
    "SELECT current_database(),"
    " (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = {0}),"
    " (SELECT default_version FROM pg_catalog.pg_available_extensions WHERE name = {0}),"
    " (SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n"
    " ON n.oid = e.extnamespace WHERE e.extname = {0})"
).format(sql.Literal(EXTENSION))


@dataclass(frozen=True)
class ExtensionState:
    database: str
    installed: str | None  # extversion, None: not created in this database
    available: str | None  # what CREATE EXTENSION would install; None: not on the server
    schema: str | None = None  # the schema its functions are in


def detect(conn: psycopg.Connection) -> ExtensionState:
    row = conn.execute(DETECT).fetchone()
    assert row is not None
    return ExtensionState(*row)


def version_tuple(version: str) -> tuple[int, ...]:
    """"2.11.2" -> (2, 11, 2); a non-numeric tail ("2.14.0-dev") is ignored."""
    parts = []
    for part in version.split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def _function(at: str | None, name: str) -> sql.Composable:
    """NAME in AT, the extension's schema; unqualified without one (only listed then, never
    run: the extension is missing)."""
    return sql.Identifier(at, name) if at else sql.SQL(name)


def _relation(schema: str, table: str) -> sql.Composed:
    # regclass from its quoted, qualified text: quoting is Identifier's, not hand-made.
    return sql.SQL("{}::regclass").format(
        sql.Literal(sql.Identifier(schema, table).as_string()))


def create_hypertable(schema: str, table: str, time_column: str,
                      chunk_interval: str | None = None, at: str | None = None) -> sql.Composed:
    chunk = sql.SQL("")
    if chunk_interval is not None:
        chunk = sql.SQL(", chunk_time_interval => {}::interval").format(
            sql.Literal(chunk_interval))
    return sql.SQL(
        "SELECT {}({}, time_column_name => {}::name{},"
        " if_not_exists => TRUE, migrate_data => TRUE)").format(
        _function(at, "create_hypertable"), _relation(schema, table), sql.Literal(time_column),
        chunk)


def compression_enabled(schema: str, table: str) -> sql.Composed:
    return sql.SQL(
        "SELECT compression_enabled FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = {} AND hypertable_name = {}").format(
        sql.Literal(schema), sql.Literal(table))


def enable_compression(schema: str, table: str, segment_by: Sequence[str]) -> sql.Composed:
    options = [sql.SQL("timescaledb.compress")]
    if segment_by:
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in segment_by).as_string()
        options.append(sql.SQL("timescaledb.compress_segmentby = {}").format(
            sql.Literal(columns)))
    return sql.SQL("ALTER TABLE {} SET ({})").format(
        sql.Identifier(schema, table), sql.SQL(", ").join(options))


_POLICY_AGE = {"compression": "compress_after", "retention": "drop_after"}


def remove_changed_policy(kind: str, schema: str, table: str, age: str,
                          at: str | None = None) -> sql.Composed:
    """Remove the table's KIND ("compression" or "retention") policy if its age setting is
    not AGE. Run before adding it: an add with if_not_exists meeting a policy of other
    arguments only warns (a notice psycopg does not log) and keeps the old one, so a changed
    setting was ignored; an unchanged policy is left alone (its job, schedule and history).
    remove_*_policy(relation, if_exists): positional, the same since TimescaleDB 2.0."""
    return sql.SQL(
        "SELECT {}({}, TRUE) FROM timescaledb_information.jobs"
        " WHERE proc_name = {} AND hypertable_schema = {} AND hypertable_name = {}"
        # Cast only an interval's text: the view may be filtered after the cast, and another
        # hypertable's integer-time policy holds a number no interval may hold.
        " AND CASE WHEN jsonb_typeof(config -> {}) = 'string' THEN (config ->> {})::interval"
        " END IS DISTINCT FROM {}::interval").format(
        _function(at, f"remove_{kind}_policy"), _relation(schema, table),
        sql.Literal(f"policy_{kind}"),
        sql.Literal(schema), sql.Literal(table), sql.Literal(_POLICY_AGE[kind]),
        sql.Literal(_POLICY_AGE[kind]), sql.Literal(age))


def add_compression_policy(schema: str, table: str, compress_after: str,
                           at: str | None = None) -> sql.Composed:
    return sql.SQL(
        "SELECT {}({}, compress_after => {}::interval, if_not_exists => TRUE)").format(
        _function(at, "add_compression_policy"), _relation(schema, table),
        sql.Literal(compress_after))


def add_retention_policy(schema: str, table: str, drop_after: str,
                         at: str | None = None) -> sql.Composed:
    return sql.SQL(
        "SELECT {}({}, drop_after => {}::interval, if_not_exists => TRUE)").format(
        _function(at, "add_retention_policy"), _relation(schema, table),
        sql.Literal(drop_after))
