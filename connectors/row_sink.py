"""What every destination sink shares: partitions, routing, table layouts, the password.

A destination sink is a Bytewax FixedPartitionedSink of row operations (operators/row_ops.py)
keyed by Cassandra partition. Its N partitions are routed by a stable hash of the key (the same
in every process, unlike hash()), the layout of each destination table is built on first use
from the Cassandra schema and the masking type changes, and the password is resolved from its
secret reference when a partition is built, never at flow definition.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Generic, TypeVar

from bytewax.outputs import FixedPartitionedSink
from typing_extensions import override

from connectors.cassandra.schema import TableSchema
from connectors.secrets import SecretResolver
from operators.row_ops import RowOp, RowUpsert, Source

SchemaLookup = Callable[[str, str], TableSchema | None]
MaskedTypesLookup = Callable[[str, str], Mapping[str, str]]
Layout = TypeVar("Layout")
T = TypeVar("T")
log = logging.getLogger(__name__)


def stable_partition(item_key: str) -> int:
    """A hash of the item key that is the same in every process and release (not hash())."""
    return int.from_bytes(hashlib.blake2b(item_key.encode(), digest_size=8).digest(), "big")


class RowOpSink(FixedPartitionedSink, Generic[Layout]):
    """The shared part; subclasses build their partitions and name, as class attributes, how a
    layout is made (`layout_builder`), what an unknown table raises (`layout_error`) and which
    errors may pass if the same batch is tried again (`transient_error`, for the spool).

    settings: needs ``partitions`` and ``password_ref``.
    schema_of: (keyspace, table) -> the table's current TableSchema.
    masked_types_of: (keyspace, table) -> columns whose type masking changes, or None.
    schema_refresh: () -> re-read the schema if it changed (called when a batch writes a
        column the table's schema lacks: a change another process read first); default none.
    """

    def __init__(self, settings: Any, schema_of: SchemaLookup,
                 masked_types_of: MaskedTypesLookup | None = None,
                 resolver_factory: Callable[[], SecretResolver] = SecretResolver, *,
                 schema_refresh: Callable[[], object] | None = None) -> None:
        self._settings = settings
        self._schema_of = schema_of
        self._masked_types_of = masked_types_of
        self._resolver_factory = resolver_factory
        self._schema_refresh = schema_refresh

    @override
    def list_parts(self) -> list[str]:
        return [str(i) for i in range(self._settings.partitions)]

    @override
    def part_fn(self, item_key: str) -> int:
        return stable_partition(item_key)

    def _password(self) -> str:
        return self._resolver_factory().resolve(self._settings.password_ref)

    layout_builder: Callable[[TableSchema, Mapping[str, str] | None], Layout]
    layout_error: type[Exception] = LookupError
    transient_error: Callable[[BaseException], bool]

    def _layouts(self) -> LayoutCache[Layout]:
        """A per-partition, memoised (keyspace, table) -> layout (see LayoutCache)."""
        return LayoutCache(self)


class LayoutCache(Generic[Layout]):
    """One sink partition's (keyspace, table) -> layout, memoised; call it like a function.

    Schema evolution: `revalidate(ops, tables)`, once per batch before it is written, looks each
    table of the batch up once (not per row) and compares the TableSchema's identity (the
    registry makes a new object per schema version): a new version gets a new layout object,
    which tells the partition to evolve the destination table before writing. A batch writing
    a column its schema lacks (a change this process has not read yet) re-reads the schema
    first (`schema_refresh`); values of columns dropped since they were read are left out."""

    def __init__(self, sink: RowOpSink) -> None:
        self._sink = sink
        # (keyspace, table) -> (schema, layout, Cassandra names of its non-key columns)
        self._entries: dict[tuple[str, str], tuple[TableSchema, Layout, frozenset[str]]] = {}
        # (keyspace, table) -> the layout its destination tables were last made or evolved for
        self._ensured: dict[tuple[str, str], Layout] = {}

    def to_ensure(self, ops: list[RowOp]) -> tuple[list[RowOp], list[Layout]]:
        """(OPS as they can be written (`revalidate`), the layouts whose destination tables
        must be created or evolved before they are: new to this partition, or a schema
        change). Call `ensured(layout)` once that is done."""
        tables = dict.fromkeys(map(_table_of, ops))  # in order; one pass over the batch
        ops = self.revalidate(ops, tables)
        stale = []
        for name in tables:
            layout = self(*name)
            if self._ensured.get(name) is not layout:
                stale.append(layout)
        return ops, stale

    def ensured(self, layout: Layout) -> None:
        self._ensured[(layout.keyspace, layout.table)] = layout

    def __call__(self, keyspace: str, table: str) -> Layout:
        found = self._entries.get((keyspace, table))
        if found is None:
            found = self._load(keyspace, table)
        return found[1]

    def _load(self, keyspace: str, table: str) -> tuple[TableSchema, Layout, frozenset[str]]:
        sink = self._sink
        schema = sink._schema_of(keyspace, table)
        if schema is None:
            raise sink.layout_error(f"no schema known for {keyspace}.{table}")
        found = self._entries.get((keyspace, table))
        if found is not None and found[0] is schema:
            return found
        masked = sink._masked_types_of(keyspace, table) if sink._masked_types_of else None
        layout = sink.layout_builder(schema, masked)
        if found is not None:
            log.info("schema of %s.%s changed: destination layout rebuilt", keyspace, table)
        found = self._entries[(keyspace, table)] = (schema, layout, frozenset(schema.columns))
        return found

    def revalidate(self, ops: list[RowOp], tables: Collection[tuple[str, str]]) -> list[RowOp]:
        """Bring the layouts of the tables OPS touch up to their current schemas; OPS, less
        the values of columns Cassandra dropped after they were read (a column neither
        current nor dropped stays: the batch then fails naming it). TABLES: the (keyspace,
        table) pairs of OPS (`to_ensure` has them: one pass less)."""
        written: dict[tuple[str, str], set[str]] = {}
        if len(tables) == 1:  # the usual batch: the columns written, by C-level loops
            written[next(iter(tables))] = set().union(*(op.values for op in ops
                                                        if isinstance(op, RowUpsert)))
        else:
            for op in ops:
                names = written.get((op.keyspace, op.table))
                if names is None:
                    names = written[(op.keyspace, op.table)] = set()
                if isinstance(op, RowUpsert):
                    names.update(op.values)
        gone: dict[tuple[str, str], frozenset[str]] = {}
        for (keyspace, table), names in written.items():
            schema, _, known = self._load(keyspace, table)
            if names <= known:
                continue
            if self._sink._schema_refresh is not None:
                self._sink._schema_refresh()
                schema, _, known = self._load(keyspace, table)
            dropped = frozenset(n for n in names - known if n in schema.dropped)
            if dropped:
                gone[(keyspace, table)] = dropped
        if not gone:
            return ops
        return [_without(op, gone.get((op.keyspace, op.table))) for op in ops]


_table_of = attrgetter("keyspace", "table")


def _without(op: RowOp, dropped: frozenset[str] | None) -> RowOp:
    if not dropped or not isinstance(op, RowUpsert) or dropped.isdisjoint(op.values):
        return op
    return dataclasses.replace(op, values={n: v for n, v in op.values.items()
                                           if n not in dropped})


class RejectedValueError(ValueError):
    """A destination (or the sink's conversion for it) refuses a value. Names the sink, the
    table, the column and a fingerprint of the key (BLAKE2b of the converted key), never a
    value: the flow stops on it, and recovery replays it once the cause is fixed."""

    sink = "destination"

    def __init__(self, table: str, column: str | None, key_fingerprint: str | None,
                 reason: str):
        self.table, self.column, self.key_fingerprint = table, column, key_fingerprint
        self.reason = reason
        super().__init__(f"{self.sink} sink cannot write table {table}, column "
                         f"{column or '?'}, key fingerprint {key_fingerprint or '?'}: {reason}")


def key_fingerprint(key: tuple) -> str:
    return hashlib.blake2b(repr(key).encode(), digest_size=8).hexdigest()


@dataclass(slots=True)
class Image:
    """A row's state as one batch will write it: converted key and values (None: a
    tombstone), its version and where the change came from."""

    key: tuple
    values: tuple | None
    version: int
    source: Source


def with_retries(action: Callable[[], T], *, transient: Callable[[BaseException], bool],
                 settings: Any, sleep: Callable[[float], None], what: str,
                 before_retry: Callable[[BaseException], None] | None = None) -> T:
    """ACTION's result; on an error TRANSIENT says may pass, try again (settings.retry_attempts
    in all) after settings.retry_backoff seconds, doubled each time up to retry_max_backoff.
    Only the error's class is logged: messages of database errors can quote values."""
    pause = settings.retry_backoff
    for attempt in range(1, settings.retry_attempts + 1):
        try:
            return action()
        except Exception as error:
            if not transient(error) or attempt == settings.retry_attempts:
                raise
            log.warning("%s: transient %s, try %d of %d in %.1fs", what, type(error).__name__,
                        attempt, settings.retry_attempts, pause)
            if before_retry is not None:
                before_retry(error)
            sleep(pause)
            pause = min(pause * 2, settings.retry_max_backoff)
    raise AssertionError("unreachable: the last attempt returns or raises")
