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
from collections.abc import Callable, Sequence

import psycopg
from psycopg import sql

from connectors.postgres._ddl import PROGRESS_TABLE
from connectors.postgres._layout import CDC_WRITTEN, TableLayout
from connectors.postgres._ordering import in_range
from connectors.row_batch import Gatherer, Target, highest_positions
from connectors.row_sink import Image, key_fingerprint
from connectors.row_sink import RejectedValueError as SharedRejectedValueError
from operators.row_ops import RangeDelete, RowOp

__all__ = ["RejectedValueError", "apply_batch", "key_fingerprint"]

_COPY_CONTEXT = re.compile(r"line (\d+)(?:, column ([^:]+))?")


class RejectedValueError(SharedRejectedValueError):
    sink = "PostgreSQL"


class _Batch(Gatherer):
    rejected = RejectedValueError

    def __init__(self, conn: psycopg.Connection, schema: str,
                 layout_of: Callable[[str, str], TableLayout]):
        super().__init__(layout_of)
        self.conn = conn
        self.schema = schema
        self.staged: set[str] = set()

    # --- range deletes -------------------------------------------------------------------

    def range_delete(self, op: RangeDelete) -> None:
        layout = self.layout_of(op.keyspace, op.table)
        for name in (layout.rows_table, layout.static_table):
            if name in self.targets:
                self.flush(self.targets.pop(name))
        rows = self.target(layout, static=False)
        pk = self.convert_key(rows.name, layout.partition, op.partition_key)
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

    def flush(self, target: Target) -> None:
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


def _refused(error: psycopg.Error, target: Target, images: Sequence[Image]
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


def apply_batch(conn: psycopg.Connection, schema: str,
                layout_of: Callable[[str, str], TableLayout], ops: Sequence[RowOp],
                step_id: str, partition: int) -> None:
    """Apply OPS in the caller's open transaction on CONN; record progress in it too.

    layout_of(keyspace, table) -> the table's layout (its tables must exist).
    Raises RejectedValueError for a value PostgreSQL or the conversion refuses."""
    _Batch(conn, schema, layout_of).apply(ops)
    rows = [(step_id, partition, node, p.segment_id, p.offset)
            for node, p in sorted(highest_positions(ops).items())]
    if rows:
        with conn.cursor() as cur:
            cur.executemany(sql.SQL(
                "INSERT INTO {}.{} AS p (step_id, sink_partition, node, segment_id, \"offset\")"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (step_id, sink_partition, node)"
                " DO UPDATE SET segment_id = EXCLUDED.segment_id,"
                " \"offset\" = EXCLUDED.\"offset\", updated_at = now()"
                " WHERE (p.segment_id, p.\"offset\") < (EXCLUDED.segment_id, EXCLUDED.\"offset\")"
            ).format(sql.Identifier(schema), sql.Identifier(PROGRESS_TABLE)), rows)
