"""ClickHouseSink: a Bytewax FixedPartitionedSink writing row operations into ClickHouse."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import clickhouse_connect
from bytewax.outputs import StatefulSinkPartition
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError
from typing_extensions import override

from connectors.clickhouse._apply import apply_batch
from connectors.clickhouse._client import close_quietly
from connectors.clickhouse._ddl import ensure_progress_table, ensure_table
from connectors.clickhouse._layout import LayoutError, TableLayout, build_layout
from connectors.clickhouse._progress import ProgressWriter
from connectors.clickhouse._settings import ClickHouseSinkSettings
from connectors.range_tombstones import RangeTombstones
from connectors.row_sink import LayoutCache, RowOpSink, stable_partition, with_retries
from operators.row_ops import RowOp

__all__ = ["ClickHouseSink", "stable_partition"]

log = logging.getLogger(__name__)

ClientFactory = Callable[[], Client]


def _transient(error: BaseException) -> bool:
    """Connection failures and timeouts (clickhouse-connect's OperationalError); server-side
    errors (DatabaseError) and refused values are not retried."""
    return isinstance(error, OperationalError)


class _ClickHousePartition(StatefulSinkPartition[RowOp, None]):
    def __init__(self, settings: ClickHouseSinkSettings, connect: ClientFactory, step_id: str,
                 partition: int, layout_of: LayoutCache[TableLayout],
                 sleep: Callable[[float], None] = time.sleep):
        self._settings = settings
        self._connect = connect
        self._client: Client | None = None
        self._step_id = step_id
        self._partition = partition
        self._layout_of = layout_of
        self._progress_ready = False
        self._sleep = sleep
        self._tombstones = RangeTombstones(step_id, layout_of)  # against late loaded rows
        self._progress = ProgressWriter(connect, settings.database, step_id, partition,
                                        settings.progress_interval, _transient)

    def _ensure(self, client: Client, ops: list[RowOp]) -> list[RowOp]:
        """Create or evolve the tables OPS write; OPS as they can be written."""
        if not self._progress_ready:
            ensure_progress_table(client, self._settings.database)
            self._progress_ready = True
        # A schema change gives a new layout (connectors/row_sink.py): evolve in place.
        ops, stale = self._layout_of.to_ensure(ops)
        for layout in stale:
            ensure_table(client, self._settings.database, layout)
            self._layout_of.ensured(layout)
        return ops

    def _apply_once(self, ops: list[RowOp]) -> None:
        if self._client is None:
            self._client = self._connect()
        ops = self._ensure(self._client, ops)
        positions = apply_batch(self._client, self._settings.database, self._layout_of, ops)
        self._progress.record(positions, self._client)

    @override
    def write_batch(self, values: list[RowOp]) -> None:
        """Apply VALUES in order: one insert per destination table; their positions go to
        _cdc_progress once they are in (off the data path: connectors/clickhouse/_progress.py).
        Transient errors are retried (bounded, with backoff, on a new client); the whole batch
        is re-inserted, which merges to the same state. A refused value raises
        RejectedValueError."""
        values = self._tombstones.screen(values)
        if not values:
            return
        with_retries(lambda: self._apply_once(values), transient=_transient,
                     settings=self._settings, sleep=self._sleep,
                     what=f"clickhouse sink {self._step_id}/{self._partition}",
                     before_retry=self._drop_client)

    def _drop_client(self, _error: BaseException | None = None) -> None:
        client, self._client = self._client, None
        close_quietly(client)  # the retry opens a new one

    @override
    def snapshot(self) -> None:
        """Nothing to resume from: the tables merge replays to the same state, and the
        applied source positions are in _cdc_progress."""
        return None

    @override
    def close(self) -> None:
        try:
            self._progress.close()
        finally:
            self._drop_client()


class ClickHouseSink(RowOpSink[TableLayout]):
    """Writes RowUpsert, RowDelete and RangeDelete items (`(key, op)` pairs) into ClickHouse.

    schema_of(keyspace, table) -> the TableSchema of a table (None: unknown, an error);
    masked_types_of(keyspace, table) -> columns whose CQL type masking changes (see
    operators.masking.masked_column_types); default: none. Items are routed to
    `settings.partitions` partitions by the same stable hash as the PostgreSQL sink: key
    items by Cassandra partition so a row's operations stay in order on one partition.
    Nothing is connected or resolved here: `build_part` does it.
    """

    layout_builder = staticmethod(build_layout)
    layout_error = LayoutError
    # The destination down, a timeout: the spool in front retries those (connectors/spool.py).
    transient_error = staticmethod(_transient)

    @override
    def build_part(self, step_id: str, for_part: str, resume_state: None
                   ) -> _ClickHousePartition:
        password = self._password()
        settings = self._settings

        def connect() -> Client:
            return clickhouse_connect.get_client(**settings.client_kwargs(password))

        return _ClickHousePartition(settings, connect, step_id, int(for_part), self._layouts())
