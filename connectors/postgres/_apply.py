"""Apply a batch of row operations inside the caller's transaction, with version guards.

Operations are applied in their order, per table: row upserts and deletes gather per
destination table (the latest image of each key wins: highest version, ties to the later
operation); a RangeDelete first writes what gathered for its table, then tombstones the stored
rows of its range. Writing = COPY into a temporary staging table, then a version-guarded upsert
from it: MERGE ... WHEN MATCHED AND stored._cdc_version <= staged._cdc_version THEN UPDATE ...
WHEN NOT MATCHED THEN INSERT (PostgreSQL 15+, `merge`), else INSERT ... SELECT ... ON CONFLICT
(key) DO UPDATE ... WHERE stored._cdc_version <= EXCLUDED._cdc_version; either way an older
image can neither overwrite nor resurrect a row. MERGE took less server time than ON CONFLICT
for stored rows (benchmarks/sink_vs_raw.py times both), but it does not insert speculatively: a
key another transaction inserts after MERGE looked for it fails the statement (MergeRaced), and
some tables refuse it (MergeRefused). The caller then redoes the batch without it
(connectors/postgres/_sink.py). Fast paths keep the guarantee: a batch whose keys are all new
goes by plain COPY straight into the table (in a savepoint: a stored key makes it fail and the
batch takes the upsert; `DirectCopy`), COPY is binary when every value is checked to have an
exact binary form (`_binary_types`), else text, and a large batch is converted chunk by chunk
while its COPY streams (`_Chunks`).
The highest source position per node goes to _cdc_progress in the same transaction.
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import re
import struct
from array import array
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from itertools import repeat
from operator import attrgetter, is_, is_not
from types import NoneType

import psycopg
from psycopg import sql

from connectors.clustering import in_range
from connectors.postgres._ddl import PROGRESS_TABLE
from connectors.postgres._layout import CDC_COLUMNS, CDC_WRITTEN, TableLayout
from connectors.row_batch import Gatherer, Target
from connectors.row_sink import Image, key_fingerprint
from connectors.row_sink import RejectedValueError as SharedRejectedValueError
from operators.row_ops import RangeDelete, RowOp

__all__ = ["DirectCopy", "MergeRaced", "MergeRefused", "RejectedValueError", "apply_batch",
           "key_fingerprint", "upsert_statement"]

_COPY_CONTEXT = re.compile(r"line (\d+)(?:, column ([^:]+))?")


class RejectedValueError(SharedRejectedValueError):
    sink = "PostgreSQL"


class MergeRefused(Exception):  # noqa: N818 - names what happened, as psycopg's errors do
    """The server refused MERGE into TABLE (FeatureNotSupported, e.g. a table with rules):
    the transaction is lost; the table is upserted by INSERT ... ON CONFLICT from now on."""

    def __init__(self, table: str, sqlstate: str | None) -> None:
        super().__init__(f"the server refuses MERGE into {table} (SQLSTATE {sqlstate})")
        self.table, self.sqlstate = table, sqlstate


class MergeRaced(Exception):  # noqa: N818
    """MERGE into TABLE met a key another transaction inserted after it looked (a unique
    violation: MERGE does not insert speculatively): the transaction is lost; the batch is
    redone by INSERT ... ON CONFLICT. The violation's message, which quotes the key, is not
    kept."""

    def __init__(self, table: str) -> None:
        super().__init__(f"MERGE into {table} met a key inserted meanwhile")
        self.table = table


# Binary COPY writes a column only when its values are checked to have exactly the binary form
# the text form would give: psycopg's binary dumpers do not range-check (an int4 of 2**40
# goes as 0, a real of 1e300 as infinity) where the server refuses the text. Per PostgreSQL
# type: (Python types allowed, check of the non-null values or None), or None where psycopg's
# dumper raises on anything it cannot write exactly (text, bytea, uuid: then text COPY redoes
# it). Other types (jsonb and inet from text, arrays) and any column failing its check use text
# COPY.
def _ints(low: int, high: int) -> Callable[[list], bool]:
    return lambda values: low <= min(values) and max(values) <= high


def _float4s(values: list) -> bool:
    return list(array("f", values)) == values  # exact in 32 bits (inf/NaN: text, as before)


_BINARY_CHECKS: dict[str, tuple[frozenset[type], Callable[[list], bool] | None] | None] = {
    "text": None,
    "smallint": (frozenset({int}), _ints(-2**15, 2**15 - 1)),
    "integer": (frozenset({int}), _ints(-2**31, 2**31 - 1)),
    "bigint": (frozenset({int}), _ints(-2**63, 2**63 - 1)),
    "boolean": (frozenset({bool}), None),
    "real": (frozenset({float}), _float4s),
    "double precision": (frozenset({float}), None),
    "numeric": (frozenset({decimal.Decimal}), None),
    "uuid": None,
    "timestamptz": (frozenset({datetime.datetime}), lambda values: all(
        map(is_not, map(attrgetter("tzinfo"), values), repeat(None)))),
    "date": (frozenset({datetime.date}), None),
    "time": (frozenset({datetime.time}), lambda values: all(
        map(is_, map(attrgetter("tzinfo"), values), repeat(None)))),
    "bytea": None,
}


def _binary_types(types: list[str], columns: list[list]) -> list[str] | None:
    """TYPES if COLUMNS (of those types) can go by binary COPY, else None: use text COPY."""
    for pg_type, column in zip(types, columns, strict=True):
        if pg_type not in _BINARY_CHECKS:
            return None
        check = _BINARY_CHECKS[pg_type]
        if check is None:
            continue
        allowed, values_ok = check
        kinds = set(map(type, column))  # one pass tells both the types and any NULL
        if not allowed.issuperset(kinds):
            if NoneType not in kinds or not allowed.issuperset(kinds - {NoneType}):
                return None
            column = [v for v in column if v is not None]  # noqa: PLW2901 - the non-null ones
        if column and values_ok is not None and not values_ok(column):
            return None
    return types



_PROBE_ROWS = 256
_CDC_WRITTEN_TYPES = tuple(dict(CDC_COLUMNS)[n].removesuffix(" NOT NULL") for n in CDC_WRITTEN)
# What a failed binary or direct COPY raises (client-side dumping or the server); the path
# after it redoes the rows and raises the error that names the column.
_BINARY_FAILURES = (psycopg.DataError, TypeError, ValueError, OverflowError, AttributeError,
                    struct.error)


class DirectCopy:
    """Per sink partition: which tables to try a plain COPY into before staging an upsert.

    A batch whose keys are all new (the initial load, insert-mostly tables) is written by COPY
    straight into the table, in a savepoint: a unique violation (a stored key) rolls it back
    and the batch takes the staged upsert. After a conflict a table skips the attempt for 1, 2,
    4 ... up to `max_skip` batches (doubling while conflicts last), so update-heavy tables
    rarely pay for it; successful attempts halve the backoff again. Once a table has met a
    stored key, its attempts start with a short COPY (`probe`) that meets one before the whole
    batch is sent; a table without conflicts (an initial load) saves that round trip."""

    def __init__(self, max_skip: int = 64) -> None:
        self.max_skip = max_skip
        self._skip: dict[str, tuple[int, int]] = {}  # table -> (batches to skip, backoff)
        self._refused: set[str] = set()  # tables whose COPY the server refuses

    def should_try(self, table: str) -> bool:
        if table in self._refused:
            return False
        remaining, backoff = self._skip.get(table, (0, 0))
        if remaining:
            self._skip[table] = (remaining - 1, backoff)
            return False
        return True

    def probe(self, table: str) -> bool:
        return table in self._skip

    def succeeded(self, table: str) -> None:
        if table in self._skip:  # still probes: its batches have met stored keys before
            self._skip[table] = (0, self._skip[table][1] // 2)

    def refused(self, table: str) -> None:
        """The server refuses COPY into TABLE (row-level security, say): never tried again."""
        self._refused.add(table)

    def conflicted(self, table: str) -> None:
        backoff = min(self._skip.get(table, (0, 0))[1] * 2 or 1, self.max_skip)
        self._skip[table] = (backoff, backoff)


class _Batch(Gatherer):
    rejected = RejectedValueError

    def __init__(self, conn: psycopg.Connection, schema: str,
                 layout_of: Callable[[str, str], TableLayout],
                 direct: DirectCopy | None = None, merge: bool = False,
                 on_conflict: Collection[str] = ()):
        super().__init__(layout_of)
        self.conn = conn
        self.schema = schema
        self.staged: set[str] = set()
        self.direct = direct
        self.merge = merge
        self.on_conflict = on_conflict  # tables upserted by ON CONFLICT even when merging

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
        # Its keys are stored rows: a plain COPY would only meet them (and back off).
        self.flush(self.targets.pop(rows.name), stored_keys=True)
        if op.include_static and layout.static_table is not None:
            static = self.target(layout, static=True)
            static.add(Image(pk, None, op.version, op.source))
            self.flush(self.targets.pop(static.name))

    # --- writing -------------------------------------------------------------------------

    def flush_all(self) -> None:
        """Write every target, converting each as it is written (the other sinks convert all
        first): a refusal after a write rolls the whole transaction back, and a large
        target's conversion runs while the server takes its COPY (`flush`)."""
        for target in self.targets.values():
            self.flush(target)
        self.targets.clear()

    def flush(self, target: Target, *, stored_keys: bool = False) -> None:
        """Write TARGET: by plain COPY into the table while its keys are new (`DirectCopy`;
        not tried for STORED_KEYS, a range delete's tombstones), else staged and upserted. A
        large target is converted in chunks as its COPY streams (`_Chunks`): the server
        writes one chunk's rows while the next converts (two cores), instead of waiting for
        the whole conversion. A key met again in a later chunk, or a
        later chunk without an exact binary form, stops the stream (rolled back), as does a
        value binary COPY fails on: the target is then converted, gathered per key and staged
        in one piece, by text COPY if binary fails, whose errors name the column."""
        if not (target.pending or target.has_converted()):
            return  # nothing gathered (a range deletion that covered no stored row)
        chunks = _Chunks(_chunks(target, self.settle), len(target.key), self.wrote)
        names, cols, types = self._names(target)
        if not stored_keys and self._copied_directly(target.name, cols, types, chunks):
            return
        stage = self._stage_table(target.name, names, cols)
        if not chunks.restart:
            try:
                with self._savepoint():
                    self._stream(stage, cols, types, chunks, 0)
            except RejectedValueError:
                raise  # a refused value (converting a chunk): not a reason to go on
            except (_Restart, *_BINARY_FAILURES):
                pass  # in one piece below
            else:
                self._upsert(target, names, stage)
                return
        whole = chunks.whole()
        columns = whole.columns()
        assert columns is not None  # it held operations
        self.wrote(whole, columns)
        rows = list(zip(*columns, strict=True))
        binary = _binary_types(types, columns)
        if binary is not None:
            try:
                with self._savepoint():
                    self._copy(stage, cols, rows, binary, True)
            except _BINARY_FAILURES:
                pass  # redone as text below
            else:  # the upsert's own errors are the batch's, not the binary COPY's
                self._upsert(whole, names, stage)
                return
        try:
            self._copy(stage, cols, rows, None, False)
        except psycopg.errors.DataError as error:
            raise _refused(error, whole, rows) from None
        self._upsert(whole, names, stage)

    def _copied_directly(self, name: str, cols: sql.Composable, types: list[str],
                         chunks: _Chunks) -> bool:
        """Whether the chunks went by plain COPY straight into the table NAME (every key new:
        the initial load, inserts), in a savepoint. A stored key makes it fail (unique
        violation) and roll back, and the table backs off; a table refusing COPY is never
        tried again; any other failure is left to the staged path, which names it."""
        if self.direct is None or not self.direct.should_try(name):
            return False
        into = sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))
        try:
            with self._savepoint():
                self._stream(into, cols, types, chunks,
                             _PROBE_ROWS if self.direct.probe(name) else 0)
        except RejectedValueError:
            raise
        except psycopg.errors.UniqueViolation:
            self.direct.conflicted(name)
            return False
        except psycopg.errors.FeatureNotSupported:
            self.direct.refused(name)  # COPY into it refused: staged from now on
            return False
        except (_Restart, *_BINARY_FAILURES):
            return False
        self.direct.succeeded(name)
        return True

    def _names(self, target: Target) -> tuple[list[str], sql.Composable, list[str]]:
        """TARGET's written column names, as a quoted list, and their PostgreSQL types."""
        names = [c.pg_name for c in target.key + target.values] + list(CDC_WRITTEN)
        return (names, sql.SQL(", ").join(sql.Identifier(n) for n in names),
                [*(c.pg_type for c in target.key + target.values), *_CDC_WRITTEN_TYPES])

    def _stream(self, into: sql.Composable, cols: sql.Composable, types: list[str],
                chunks: _Chunks, probe: int) -> None:
        """One COPY into INTO of every chunk, each converted as the previous one's rows go
        (binary if the first chunk has an exact binary form: a later one without raises
        _Restart); PROBE rows of the first chunk go first, by a COPY of their own."""
        first = list(zip(*chunks.get(0), strict=True))
        binary = _binary_types(types, chunks.get(0))
        if probe:
            self._copy(into, cols, first[:probe], binary, binary is not None)
        statement = sql.SQL("COPY {} ({}) FROM STDIN" +
                            (" (FORMAT BINARY)" if binary is not None else ""))
        with self.conn.cursor() as cur, cur.copy(statement.format(into, cols)) as copy:
            if binary is not None:
                copy.set_types(binary)
            write = copy.write_row
            for row in first[probe:]:
                write(row)
            for index in range(1, len(chunks)):
                columns = chunks.get(index)
                if binary is not None and _binary_types(types, columns) is None:
                    chunks.restart = True
                    raise _Restart
                for row in zip(*columns, strict=True):
                    write(row)

    def _stage_table(self, name: str, names: list[str], cols: sql.Composable
                     ) -> sql.Composable:
        """The session's staging table for NAME's table, made if missing, emptied if this batch
        used it already."""
        # The column list is in the name: a pooled connection's stage of an older layout
        # (before a schema change) is never reused with the new one.
        stage = sql.Identifier("_cdc_stage_" + hashlib.blake2b(
            f"{self.schema}.{name}|{names}".encode(), digest_size=8).hexdigest())
        if name in self.staged:
            self.conn.execute(sql.SQL("TRUNCATE {}").format(stage))
        else:
            self.conn.execute(sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS AS"
                " SELECT {} FROM {}.{} WITH NO DATA").format(
                stage, cols, sql.Identifier(self.schema), sql.Identifier(name)))
            self.staged.add(name)
        return stage

    def _upsert(self, target: Target, names: list[str], stage: sql.Composable) -> None:
        """The version-guarded upsert of the staged rows into TARGET's table. MERGE's own
        failures are raised as MergeRefused and MergeRaced, without the server's message."""
        merge = self.merge and target.name not in self.on_conflict
        statement = upsert_statement(
            sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(target.name)),
            stage, [c.pg_name for c in target.key], names[len(target.key):], merge=merge)
        try:
            self.conn.execute(statement)
        except psycopg.errors.FeatureNotSupported as error:
            if not merge:
                raise
            raise MergeRefused(target.name, error.sqlstate) from None
        except psycopg.errors.UniqueViolation:
            if not merge:
                raise
            raise MergeRaced(target.name) from None

    @contextmanager
    def _savepoint(self) -> Iterator[None]:
        """Undo the block's statements if it raises. Not released on success (one round trip
        less): COMMIT releases it with the transaction."""
        self.conn.execute("SAVEPOINT _cdc_attempt")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK TO SAVEPOINT _cdc_attempt")
            raise

    def _copy(self, into: sql.Composable, cols: sql.Composable, rows: list[tuple],
              types: list[str] | None, binary: bool) -> None:
        statement = sql.SQL("COPY {} ({}) FROM STDIN" + (" (FORMAT BINARY)" if binary else ""))
        with self.conn.cursor() as cur, cur.copy(statement.format(into, cols)) as copy:
            if binary:
                copy.set_types(types)
            write = copy.write_row
            for row in rows:
                write(row)


# A target of at least 2 * _CHUNK_OPS pending operations is converted and streamed in chunks of
# about _CHUNK_OPS: small enough that the server has the first rows while the rest convert.
_CHUNK_OPS = 1000


class ChunkConversionError(RuntimeError):
    """Converting a chunk of a streamed target failed otherwise than by refusing a value."""


class _Restart(Exception):  # noqa: N818 - a signal, not an error
    """A streamed COPY cannot go on (a key met again in a later chunk, a chunk without an
    exact binary form): rolled back, the target is written in one piece."""


def _chunks(target: Target, settle: Callable[[Target], None]) -> list[Target]:
    """TARGET, or Targets of the same table each holding a consecutive slice of its pending
    operations (unconverted), for a target holding nothing but pending operations (the
    usual batch) of at least 2 * _CHUNK_OPS, whose keys cannot hold NaN."""
    pending = target.pending
    # NaN-capable keys (float columns): the check across chunks compares keys as Python does,
    # and NaN != NaN; such targets go whole, gathered by `key_slot`.
    if len(pending) < 2 * _CHUNK_OPS or target.has_converted() or target.nan_keys:
        return [target]
    size = -(-len(pending) // (len(pending) // _CHUNK_OPS))
    parts = []
    for start in range(0, len(pending), size):
        part = Target(target.name, target.key, target.values)
        part.settle = settle
        part.pending = pending[start:start + size]
        parts.append(part)
    target.pending = []
    return parts


class _Chunks:
    """The chunks of one target, converted once each, on first use, in order. A key of a later
    chunk met in an earlier one sets `restart` and raises _Restart: one COPY of the chunks
    would hold it twice (a unique violation, or a MERGE touching a row twice), so the target
    is then gathered per key and written in one piece (`whole`)."""

    def __init__(self, parts: list[Target], width: int,
                 wrote: Callable[[Target, list[list]], None]) -> None:
        self._parts = parts
        self._width = width
        self._wrote = wrote  # Gatherer.wrote: each part's columns as they are converted
        self._columns: list[list[list] | None] = [None] * len(parts)
        self._keys: set[tuple] = set()
        self.restart = False

    def __len__(self) -> int:
        return len(self._parts)

    def get(self, index: int) -> list[list]:
        columns = self._columns[index]
        if columns is None:
            try:
                columns = self._parts[index].columns()
                assert columns is not None  # a part holds operations
                self._wrote(self._parts[index], columns)
                # One part has nothing to meet again (its own repeats are gathered).
                keys = set(zip(*columns[:self._width], strict=True)) \
                    if len(self._parts) > 1 else set()
            except RejectedValueError:
                raise
            except Exception as error:  # noqa: BLE001 - re-raised, as a type of its own
                # Not a refusal (those are RejectedValueError): a failure the COPY paths'
                # handlers must not take for a value binary COPY cannot write, since the
                # chunk's operations are gone from its pending list. The class only: a
                # message may quote a value.
                raise ChunkConversionError(type(error).__name__) from None
            if not self._keys.isdisjoint(keys):
                self.restart = True
            self._keys |= keys
            self._columns[index] = columns
        if self.restart:
            raise _Restart
        return columns

    def whole(self) -> Target:
        """The target in one piece: its only part, or a Target of the same table holding
        every chunk's images, gathered per key in operation order."""
        first = self._parts[0]
        if len(self._parts) == 1:
            return first
        whole = Target(first.name, first.key, first.values)
        for part in self._parts:
            whole.absorb(part)
        return whole


def upsert_statement(table: sql.Composable, stage: sql.Composable, keys: Sequence[str],
                     values: Sequence[str], *, merge: bool) -> sql.Composed:
    """The version-guarded upsert of STAGE's rows into TABLE (both already qualified and
    quoted): KEYS are the primary-key columns, VALUES the others written (the bookkeeping
    columns included); _cdc_updated_at is set on update. MERGE if MERGE (PostgreSQL 15+), else
    INSERT ... ON CONFLICT (see the module docstring)."""
    names = [*keys, *values]
    cols = sql.SQL(", ").join(map(sql.Identifier, names))
    if merge:
        return sql.SQL(
            "MERGE INTO {} AS t USING {} AS s ON {}"
            " WHEN MATCHED AND t._cdc_version <= s._cdc_version THEN UPDATE SET {}"
            " WHEN NOT MATCHED THEN INSERT ({}) VALUES ({})").format(
            table, stage,
            sql.SQL(" AND ").join(sql.SQL("t.{0} = s.{0}").format(sql.Identifier(k))
                                  for k in keys),
            sql.SQL(", ").join([sql.SQL("{0} = s.{0}").format(sql.Identifier(v)) for v in values]
                               + [sql.SQL("_cdc_updated_at = now()")]),
            cols, sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(n)) for n in names))
    return sql.SQL(
        "INSERT INTO {} AS t ({}) SELECT {} FROM {} ON CONFLICT ({}) DO UPDATE SET {}"
        " WHERE t._cdc_version <= EXCLUDED._cdc_version").format(
        table, cols, cols, stage, sql.SQL(", ").join(map(sql.Identifier, keys)),
        sql.SQL(", ").join([sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(v))
                            for v in values] + [sql.SQL("_cdc_updated_at = now()")]))


def _refused(error: psycopg.Error, target: Target, rows: Sequence[tuple]
             ) -> RejectedValueError:
    """Name the table, column and key of a COPY error without repeating its message (which
    quotes the value)."""
    match = _COPY_CONTEXT.search(error.diag.context or "")
    column = fingerprint = None
    if match:
        line = int(match.group(1))
        if 0 < line <= len(rows):
            fingerprint = key_fingerprint(rows[line - 1][:len(target.key)])
        column = match.group(2)
        names = {c.pg_name: c.name for c in target.key + target.values}
        column = names.get(column or "", column)
    return RejectedValueError(target.name, column, fingerprint,
                              f"{type(error).__name__} (SQLSTATE {error.sqlstate})")


def apply_batch(conn: psycopg.Connection, schema: str,
                layout_of: Callable[[str, str], TableLayout], ops: Sequence[RowOp],
                step_id: str, partition: int, direct: DirectCopy | None = None,
                merge: bool = False, on_conflict: Collection[str] = ()) -> None:
    """Apply OPS in the caller's open transaction on CONN; record progress in it too.

    layout_of(keyspace, table) -> the table's layout (its tables must exist).
    direct: the partition's DirectCopy (kept across batches); None: always stage and upsert.
    merge: upsert staged rows by MERGE (the server must be PostgreSQL 15 or later), except
    into the tables in ON_CONFLICT; a key another transaction inserts meanwhile raises
    MergeRaced (redo the batch without MERGE), a table refusing MERGE MergeRefused.
    Raises RejectedValueError for a value PostgreSQL or the conversion refuses."""
    batch = _Batch(conn, schema, layout_of, direct, merge, on_conflict)
    batch.apply(ops)
    rows = [(step_id, partition, node, p.segment_id, p.offset)
            for node, p in sorted(batch.positions(list(ops)).items())]
    if rows:
        with conn.cursor() as cur:
            cur.executemany(sql.SQL(
                "INSERT INTO {}.{} AS p (step_id, sink_partition, node, segment_id, \"offset\")"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (step_id, sink_partition, node)"
                " DO UPDATE SET segment_id = EXCLUDED.segment_id,"
                " \"offset\" = EXCLUDED.\"offset\", updated_at = now()"
                " WHERE (p.segment_id, p.\"offset\") < (EXCLUDED.segment_id, EXCLUDED.\"offset\")"
            ).format(sql.Identifier(schema), sql.Identifier(PROGRESS_TABLE)), rows)
