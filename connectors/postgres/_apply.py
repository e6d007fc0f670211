"""Apply a batch of row operations inside the caller's transaction, with version guards.

Operations are applied in their order, per table: row upserts and deletes gather per
destination table (the latest image of each key wins: highest version, ties to the later
operation); a RangeDelete first writes what gathered for its table, then tombstones the stored
rows of its range. Writing = COPY into a temporary staging table, then
INSERT ... SELECT ... ON CONFLICT (key) DO UPDATE ... WHERE stored._cdc_version <=
EXCLUDED._cdc_version, so an older image can neither overwrite nor resurrect a row. The highest
source position per node goes to _cdc_progress in the same transaction.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from connectors.cassandra.events import Position
from connectors.postgres._ddl import PROGRESS_TABLE
from connectors.postgres._layout import CDC_WRITTEN, Column, TableLayout
from connectors.postgres._ordering import in_range
from connectors.postgres._values import ValueRefused, identity
from connectors.row_sink import Image, key_fingerprint
from connectors.row_sink import RejectedValueError as SharedRejectedValueError
from operators.row_ops import RangeDelete, RowDelete, RowOp, RowUpsert

__all__ = ["RejectedValueError", "apply_batch", "key_fingerprint"]

_COPY_CONTEXT = re.compile(r"line (\d+)(?:, column ([^:]+))?")


class RejectedValueError(SharedRejectedValueError):
    sink = "PostgreSQL"


@dataclass
class _Target:
    """One destination table (rows or static companion) and the images gathered for it."""

    name: str
    key: tuple[Column, ...]
    values: tuple[Column, ...]
    images: dict[tuple, Image] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Conversion plans: identity converters are skipped on the hot path.
        self.key_plan = tuple((c.name, None if c.convert is identity else c.convert)
                              for c in self.key)
        self.value_plan = tuple((c.name, None if c.convert is identity else c.convert)
                                for c in self.values)
        self.value_names = frozenset(c.name for c in self.values)

    def add(self, image: Image) -> None:
        current = self.images.get(image.key)
        if current is None or image.version >= current.version:
            self.images[image.key] = image


class _Batch:
    def __init__(self, conn: psycopg.Connection, schema: str,
                 layout_of: Callable[[str, str], TableLayout]):
        self.conn = conn
        self.schema = schema
        self.layout_of = layout_of
        self.targets: dict[str, _Target] = {}
        self.staged: set[str] = set()
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

    # --- row operations ------------------------------------------------------------------

    def row(self, op: RowUpsert | RowDelete) -> None:
        target = self.cached.get((op.keyspace, op.table, op.static))
        if target is None:
            target = self.target(self.layout_of(op.keyspace, op.table), op.static)
            self.cached[(op.keyspace, op.table, op.static)] = target
        elif target.name not in self.targets:  # written by a range delete since: gather anew
            target = self.target(self.layout_of(op.keyspace, op.table), op.static)
            self.cached[(op.keyspace, op.table, op.static)] = target
        values = None
        try:
            got = op.key.get
            key = tuple(got(n) if f is None else f(got(n)) for n, f in target.key_plan)
            if None in key:
                raise ValueRefused("NULL key")
            if isinstance(op, RowUpsert):
                got = op.values.get
                if not target.value_names.issuperset(op.values):
                    raise ValueRefused("unknown column")
                values = tuple(got(n) if f is None else f(got(n)) for n, f in target.value_plan)
        except Exception:  # noqa: BLE001 - redone slowly to name the column, then raised
            key, values = self._row_slowly(target, op)
        target.add(Image(key, values, op.version, op.source))

    def _row_slowly(self, target: _Target, op: RowUpsert | RowDelete) -> tuple[tuple, Any]:
        key = _convert_key(target, op.key)
        if not isinstance(op, RowUpsert):
            return key, None
        unknown = set(op.values) - target.value_names
        if unknown:
            raise RejectedValueError(target.name, sorted(unknown)[0], key_fingerprint(key),
                                     "the column is not in the table's schema")
        return key, tuple(_convert(target, key, c, op.values.get(c.name)) for c in target.values)

    # --- range deletes -------------------------------------------------------------------

    def range_delete(self, op: RangeDelete) -> None:
        layout = self.layout_of(op.keyspace, op.table)
        for name in (layout.rows_table, layout.static_table):
            if name in self.targets:
                self.flush(self.targets.pop(name))
        rows = self.target(layout, static=False)
        pk = _convert_key(_Target(rows.name, layout.partition, ()), op.partition_key)
        contains = in_range(layout.clustering_columns(), op.start, op.end)
        selected = [sql.SQL("{}::text").format(sql.Identifier(c.pg_name))
                    if c.pg_type == "jsonb" else sql.Identifier(c.pg_name)
                    for c in layout.clustering]
        where = sql.SQL(" AND ").join(
            [sql.SQL("{} = %s").format(sql.Identifier(c.pg_name)) for c in layout.partition]
            + [sql.SQL("_cdc_version <= %s")])
        query = sql.SQL("SELECT {} FROM {}.{} WHERE {}").format(
            sql.SQL(", ").join(selected) if selected else sql.SQL("1"),
            sql.Identifier(self.schema), sql.Identifier(layout.rows_table), where)
        for stored in self.conn.execute(query, (*pk, op.version)).fetchall():
            clustering = dict(zip((c.name for c in layout.clustering), stored, strict=False))
            if not layout.clustering or contains(clustering):
                key = pk + (tuple(stored) if layout.clustering else ())
                rows.add(Image(key, None, op.version, op.source))
        self.flush(self.targets.pop(rows.name))
        if op.include_static and layout.static_table is not None:
            static = self.target(layout, static=True)
            static.add(Image(pk, None, op.version, op.source))
            self.flush(self.targets.pop(static.name))

    # --- writing -------------------------------------------------------------------------

    def flush_all(self) -> None:
        for target in self.targets.values():
            self.flush(target)
        self.targets.clear()

    def flush(self, target: _Target) -> None:
        if not target.images:
            return
        schema = sql.Identifier(self.schema)
        table = sql.Identifier(target.name)
        stage = sql.Identifier("_cdc_stage_" + hashlib.blake2b(
            f"{self.schema}.{target.name}".encode(), digest_size=8).hexdigest())
        names = [c.pg_name for c in target.key + target.values] + list(CDC_WRITTEN)
        cols = sql.SQL(", ").join(sql.Identifier(n) for n in names)
        if target.name in self.staged:
            self.conn.execute(sql.SQL("TRUNCATE {}").format(stage))
        else:
            self.conn.execute(sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS AS"
                " SELECT {} FROM {}.{} WITH NO DATA").format(stage, cols, schema, table))
            self.staged.add(target.name)
        images = list(target.images.values())
        nulls = (None,) * len(target.values)
        try:
            with self.conn.cursor() as cur:
                with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, cols)) as copy:
                    for image in images:
                        source = image.source
                        copy.write_row(image.key + (image.values or nulls) + (
                            image.version, image.values is None, source.node,
                            source.position.segment_id, source.position.offset))
        except psycopg.errors.DataError as error:
            raise _refused(error, target, images) from None
        key = sql.SQL(", ").join(sql.Identifier(c.pg_name) for c in target.key)
        updates = [sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n))
                   for n in names[len(target.key):]]
        updates.append(sql.SQL("_cdc_updated_at = now()"))
        self.conn.execute(sql.SQL(
            "INSERT INTO {}.{} AS t ({}) SELECT {} FROM {} ON CONFLICT ({}) DO UPDATE SET {}"
            " WHERE t._cdc_version <= EXCLUDED._cdc_version").format(
            schema, table, cols, cols, stage, key, sql.SQL(", ").join(updates)))


def _convert(target: _Target, key: tuple, column: Column, value: Any) -> Any:
    try:
        return column.convert(value)
    except (ValueRefused, ValueError, TypeError, OverflowError) as error:
        reason = str(error) if isinstance(error, ValueRefused) else type(error).__name__
        raise RejectedValueError(target.name, column.name, key_fingerprint(key),
                                 reason) from None


def _convert_key(target: _Target, key: Mapping[str, Any]) -> tuple:
    raw = tuple(key.get(c.name) for c in target.key)
    converted = tuple(_convert(target, raw, c, key.get(c.name)) for c in target.key)
    missing = [c.name for c, v in zip(target.key, converted, strict=True) if v is None]
    if missing:
        raise RejectedValueError(target.name, missing[0], key_fingerprint(converted),
                                 "a primary-key column is NULL or missing")
    return converted


def _refused(error: psycopg.Error, target: _Target, images: Sequence[Image]
             ) -> RejectedValueError:
    """Name the table, column and key of a COPY error without repeating its message (which
    quotes the value)."""
    match = _COPY_CONTEXT.search(error.diag.context or "")
    column = fingerprint = None
    if match:
        line = int(match.group(1))
        if 0 < line <= len(images):
            fingerprint = key_fingerprint(images[line - 1].key)
        column = match.group(2)
        names = {c.pg_name: c.name for c in target.key + target.values}
        column = names.get(column or "", column)
    return RejectedValueError(target.name, column, fingerprint,
                              f"{type(error).__name__} (SQLSTATE {error.sqlstate})")


def _progress(ops: Iterable[RowOp]) -> dict[str, Position]:
    highest: dict[str, Position] = {}
    for op in ops:
        node, position = op.source.node, op.source.position
        current = highest.get(node)
        if current is None or (position.segment_id, position.offset) > \
                (current.segment_id, current.offset):
            highest[node] = position
    return highest


def apply_batch(conn: psycopg.Connection, schema: str,
                layout_of: Callable[[str, str], TableLayout], ops: Sequence[RowOp],
                step_id: str, partition: int) -> None:
    """Apply OPS in the caller's open transaction on CONN; record progress in it too.

    layout_of(keyspace, table) -> the table's layout (its tables must exist).
    Raises RejectedValueError for a value PostgreSQL or the conversion refuses."""
    batch = _Batch(conn, schema, layout_of)
    for op in ops:
        if isinstance(op, RangeDelete):
            batch.range_delete(op)
        elif isinstance(op, RowUpsert | RowDelete):
            batch.row(op)
        else:
            raise TypeError(f"not a row operation: {type(op).__name__}")
    batch.flush_all()
    rows = [(step_id, partition, node, p.segment_id, p.offset)
            for node, p in sorted(_progress(ops).items())]
    if rows:
        with conn.cursor() as cur:
            cur.executemany(sql.SQL(
                "INSERT INTO {}.{} AS p (step_id, sink_partition, node, segment_id, \"offset\")"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (step_id, sink_partition, node)"
                " DO UPDATE SET segment_id = EXCLUDED.segment_id,"
                " \"offset\" = EXCLUDED.\"offset\", updated_at = now()"
                " WHERE (p.segment_id, p.\"offset\") < (EXCLUDED.segment_id, EXCLUDED.\"offset\")"
            ).format(sql.Identifier(schema), sql.Identifier(PROGRESS_TABLE)), rows)
