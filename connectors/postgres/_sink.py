"""PostgresSink: a Bytewax FixedPartitionedSink writing row operations into PostgreSQL."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
from bytewax.outputs import StatefulSinkPartition
from prometheus_client import Counter
from psycopg_pool import ConnectionPool, PoolTimeout
from typing_extensions import override

from connectors.postgres._apply import DirectCopy, MergeRaced, MergeRefused, apply_batch
from connectors.postgres._ddl import TableHook, ensure_progress_table, ensure_table
from connectors.postgres._layout import LayoutError, TableLayout, build_layout
from connectors.postgres._settings import PostgresSinkSettings
from connectors.range_tombstones import RangeTombstones
from connectors.row_sink import (
    LayoutCache,
    MaskedTypesLookup,
    RowOpSink,
    SchemaLookup,
    stable_partition,
    with_retries,
)
from connectors.secrets import SecretResolver
from operators.row_ops import RowOp

__all__ = ["PostgresSink", "stable_partition"]

log = logging.getLogger(__name__)

REDONE = Counter("cdc_postgres_batches_redone",
                 "Batches whose transaction was lost to MERGE and redone by INSERT ... ON "
                 "CONFLICT", ["sink", "reason"])

_MERGE_SINCE = 150000  # server_version of PostgreSQL 15, the first with MERGE


def _transient(error: BaseException) -> bool:
    """Errors after which the same transaction may succeed: the connection or the server
    failed, a serialization failure or deadlock, a timeout. Data and schema errors are not,
    nor a limit the same batch meets again (psycopg files them under OperationalError too,
    so the spool retried them for ever, logging the destination as unavailable): 53400, a
    configured limit (TimescaleDB's rows decompressed per statement, say), and class 54, a
    limit of the server's own (an index row too large)."""
    if isinstance(error, PoolTimeout):
        return True
    if not isinstance(error, psycopg.OperationalError):
        return False
    state = error.sqlstate or ""
    return state != "53400" and not state.startswith("54")


def _connection_lost(error: BaseException) -> bool:
    """Transient errors of the connection itself (no connection from the pool; no SQLSTATE,
    class 08 connection exceptions, 57P01-57P03 the server shutting down or starting), not
    of a transaction the server refused (serialization failure, deadlock, timeout)."""
    if isinstance(error, PoolTimeout):
        return True
    if not isinstance(error, psycopg.OperationalError):
        return False
    state = error.sqlstate
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


class _PostgresPartition(StatefulSinkPartition[RowOp, None]):
    def __init__(self, settings: PostgresSinkSettings, new_pool: Callable[[], ConnectionPool],
                 step_id: str, partition: int, layout_of: LayoutCache[TableLayout],
                 sleep: Callable[[float], None] = time.sleep,
                 table_hook: TableHook | None = None, merge: bool = False,
                 direct_copy: bool = True):
        self._settings = settings
        self._new_pool = new_pool
        self._pool = new_pool()
        self._step_id = step_id
        self._partition = partition
        self._layout_of = layout_of
        self._progress_ready = False
        self._sleep = sleep
        self._table_hook = table_hook
        # Which tables take a plain COPY first (none without direct_copy).
        self._direct = DirectCopy() if direct_copy else None
        self._merge = merge  # upsert by MERGE where the server has it (PostgreSQL 15+)
        self._on_conflict: set[str] = set()  # tables that refused MERGE: ON CONFLICT
        self._tombstones = RangeTombstones(step_id, layout_of)  # against late loaded rows

    def _ensure(self, conn: psycopg.Connection, ops: list[RowOp]) -> list[RowOp]:
        """Create or evolve the tables OPS write; OPS as they can be written."""
        if not self._progress_ready:
            ensure_progress_table(conn, self._settings.schema)
            self._progress_ready = True
        # A schema change gives a new layout (connectors/row_sink.py): evolve in place.
        ops, stale = self._layout_of.to_ensure(ops)
        for layout in stale:
            ensure_table(conn, self._settings.schema, layout, self._table_hook,
                         self._settings.fillfactor)
            self._layout_of.ensured(layout)
        return ops

    def _apply_once(self, ops: list[RowOp]) -> None:
        with self._pool.connection() as conn:
            ops = self._ensure(conn, ops)
            merge = self._merge and conn.info.server_version >= _MERGE_SINCE
            try:
                self._write(conn, ops, merge=merge)
                return
            except MergeRefused as refused:
                # A table that refuses MERGE (one with rules, say): upserted by ON CONFLICT
                # from now on; the other tables keep MERGE.
                self._on_conflict.add(refused.table)
                log.warning("postgres sink %s/%s: %s; upserting it by INSERT ... ON CONFLICT",
                            self._step_id, self._partition, refused)
                REDONE.labels(self._step_id, "merge_refused").inc()
            except MergeRaced:
                # MERGE does not insert speculatively: a key another transaction inserted
                # after MERGE looked for it failed the statement, and the transaction with
                # it (rare: sink partitions own their keys).
                REDONE.labels(self._step_id, "merge_raced").inc()
            # The batch again, all of it by ON CONFLICT; outside the handler, so that nothing
            # it raises carries the lost transaction's error along.
            self._write(conn, ops, merge=False)

    def _write(self, conn: psycopg.Connection, ops: list[RowOp], *, merge: bool) -> None:
        with conn.transaction():
            apply_batch(conn, self._settings.schema, self._layout_of, ops, self._step_id,
                        self._partition, self._direct, merge=merge,
                        on_conflict=self._on_conflict)

    def _apply(self, ops: list[RowOp]) -> None:
        with_retries(lambda: self._apply_once(ops), transient=_transient,
                     settings=self._settings, sleep=self._sleep,
                     what=f"postgres sink {self._step_id}/{self._partition}",
                     before_retry=self._renew_pool)

    def _renew_pool(self, error: BaseException) -> None:
        """A fresh pool after the connection was lost. psycopg_pool retries a failed
        connection with a doubling delay and no cap below its reconnect_timeout (1, 2, 4 ...
        64 s): after an outage of a minute its next attempt came up to a minute after the
        server was back, and the partition's backlog waited that long. A new pool connects at
        once. A transaction the server refused (a deadlock, say) keeps the pool."""
        if not _connection_lost(error):
            return
        old, self._pool = self._pool, self._new_pool()
        old.close(timeout=0)

    @override
    def write_batch(self, values: list[RowOp]) -> None:
        """Apply VALUES in order: one transaction per `max_transaction_ops` operations (by
        default the whole batch), data and progress together. Transient errors are retried
        (bounded, with backoff); a refused value raises RejectedValueError."""
        values = self._tombstones.screen(values)
        step = self._settings.max_transaction_ops
        for start in range(0, len(values), step):
            self._apply(values[start:start + step])

    @override
    def snapshot(self) -> None:
        """Nothing to resume from: the tables are idempotent under replays, and the
        applied source positions are in _cdc_progress."""
        return None

    @override
    def close(self) -> None:
        self._pool.close()


class PostgresSink(RowOpSink[TableLayout]):
    """Writes RowUpsert, RowDelete and RangeDelete items (`(key, op)` pairs) into PostgreSQL.

    schema_of(keyspace, table) -> the TableSchema of a table (None: unknown, an error);
    masked_types_of(keyspace, table) -> columns whose CQL type masking changes (see
    operators.masking.masked_column_types); default: none. Items are routed to
    `settings.partitions` partitions by a stable hash of their key: key items by Cassandra
    partition so a row's operations stay in order on one partition.
    table_hook(conn, schema, layout): extra idempotent DDL run after a table's CREATEs, in
    their transaction (see `TableHook`; the TimescaleDB sink's seam). Default: none.
    merge: upsert staged rows by MERGE on PostgreSQL 15 and later (connectors/postgres/_apply.py),
    a batch that meets a concurrently inserted key redone by INSERT ... ON CONFLICT; False keeps
    ON CONFLICT everywhere.
    direct_copy: while a table's keys are new, try a plain COPY into it before staging an
    upsert (connectors/postgres/_apply.py, DirectCopy, which backs off after stored keys);
    False always stages and upserts. Neither is a pipeline option: both are for tests and
    benchmarks that need one path.
    Nothing is connected or resolved here: `build_part` does it.
    """

    def __init__(self, settings: PostgresSinkSettings, schema_of: SchemaLookup,
                 masked_types_of: MaskedTypesLookup | None = None,
                 resolver_factory: Callable[[], SecretResolver] = SecretResolver,
                 table_hook: TableHook | None = None, *,
                 schema_refresh: Callable[[], object] | None = None, merge: bool = True,
                 direct_copy: bool = True):
        super().__init__(settings, schema_of, masked_types_of, resolver_factory,
                         schema_refresh=schema_refresh)
        for name, value in (("merge", merge), ("direct_copy", direct_copy)):
            if not isinstance(value, bool):
                raise ValueError(f"PostgresSink's {name} must be True or False, not {value!r}")
        self._table_hook = table_hook
        self._merge = merge
        self._direct_copy = direct_copy

    layout_builder = staticmethod(build_layout)
    layout_error = LayoutError
    # The destination down, a timeout: the spool in front retries those (connectors/spool.py).
    transient_error = staticmethod(_transient)

    @override
    def build_part(self, step_id: str, for_part: str, resume_state: None
                   ) -> _PostgresPartition:
        password = self._password()
        kwargs: dict[str, Any] = self._settings.connection_kwargs(password)

        def new_pool() -> ConnectionPool:
            return ConnectionPool(
                kwargs=kwargs, min_size=self._settings.pool_min_size,
                max_size=self._settings.pool_max_size, timeout=self._settings.pool_timeout,
                max_lifetime=self._settings.pool_max_lifetime,
                check=ConnectionPool.check_connection, name=f"{step_id}-{for_part}", open=True)

        return _PostgresPartition(self._settings, new_pool, step_id, int(for_part),
                                  self._layouts(), table_hook=self._table_hook,
                                  merge=self._merge, direct_copy=self._direct_copy)
