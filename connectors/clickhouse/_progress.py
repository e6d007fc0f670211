"""_cdc_progress rows of one sink partition, written off the data path.

A progress row says how far the partition's data is in ClickHouse: per node, the highest
commit-log position whose row operations were inserted. Every insert makes a part (a directory
of files on the server, merged later in the background), and ClickHouse wants about one insert
per second per table, not one per batch: a one-row progress insert after each 10k-row batch
took about 5.5 ms of its ~70 (docs/performance.md), and a busy flow writing small batches
would make parts in _cdc_progress faster than merges remove them.

So a batch's positions are recorded once its data inserts have returned (never before), and a
thread of the partition writes what was recorded at most every `interval` seconds, on its own
client (the data path's client holds a session, which takes one query at a time), and once
more at close. Interval 0 writes after every batch on the data path, its errors raised there.

Between writes, and after a crash, _cdc_progress says less than what was applied: a lower
bound, as it always was between a batch's data and its progress row. Bytewax's replay (or
the spool's) writes those batches again, and their positions with them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from clickhouse_connect.driver.binding import quote_identifier as q
from clickhouse_connect.driver.client import Client
from prometheus_client import Counter

from connectors.cassandra.events import Position
from connectors.clickhouse._ddl import PROGRESS_TABLE

__all__ = ["ProgressWriter", "insert_progress"]

log = logging.getLogger(__name__)

CLOSE_WAIT = 30.0  # seconds close() waits for a write in progress

PROGRESS_WRITE_ERRORS = Counter(
    "cdc_clickhouse_progress_write_errors",
    "Failed writes of _cdc_progress rows off the data path (the rows are kept and written "
    "with the next)", ["sink", "partition"])


def insert_progress(client: Client, database: str, step_id: str, partition: int,
                    positions: Mapping[str, Position]) -> None:
    """One insert of POSITIONS (node -> highest position) into _cdc_progress."""
    rows = [(step_id.encode(), partition, node.encode(), p.segment_id, p.offset)
            for node, p in sorted(positions.items())]
    if rows:
        client.insert(f"{q(database)}.{q(PROGRESS_TABLE)}", rows,
                      column_names=["step_id", "sink_partition", "node", "segment_id", "offset"],
                      column_type_names=["String", "Int32", "String", "Int64", "Int32"])


def _merge(into: dict[str, Position], positions: Mapping[str, Position]) -> None:
    for node, position in positions.items():
        current = into.get(node)
        if current is None or (position.segment_id, position.offset) > \
                (current.segment_id, current.offset):
            into[node] = position


class ProgressWriter:
    """The progress of one sink partition (see the module docstring).

    connect() -> a new client for the writer's thread; interval: seconds between writes (> 0),
    or 0 for a write after every batch. Nothing runs until the first `record`."""

    def __init__(self, connect: Callable[[], Client], database: str, step_id: str,
                 partition: int, interval: float) -> None:
        if not interval >= 0:
            raise ValueError("the progress interval must be >= 0 seconds")
        self._connect = connect
        self._where = (database, step_id, partition)
        self._interval = interval
        self._pending: dict[str, Position] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Client | None = None  # the thread's

    def record(self, positions: Mapping[str, Position], client: Client) -> None:
        """POSITIONS (node -> highest) of a batch whose data is in. With interval 0 they are
        written now through CLIENT (the data path's), and a failure raises."""
        if not positions:
            return
        if self._interval == 0:
            insert_progress(client, *self._where, positions)
            return
        with self._lock:
            _merge(self._pending, positions)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, daemon=True,
                name=f"progress-{self._where[1]}-{self._where[2]}")
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.write_pending()

    def write_pending(self) -> bool:
        """Write what was recorded and not yet written; False (logged, counted, the rows kept
        for the next write) when that failed."""
        with self._lock:
            positions, self._pending = self._pending, {}
        if not positions:
            return True
        try:
            if self._client is None:
                self._client = self._connect()
            insert_progress(self._client, *self._where, positions)
        except Exception as error:  # noqa: BLE001 - kept and retried; the data is in already
            with self._lock:
                _merge(self._pending, positions)
            self._drop_client()
            _, step_id, partition = self._where
            PROGRESS_WRITE_ERRORS.labels(step_id, str(partition)).inc()
            # The class only: a server message can quote values.
            log.warning("clickhouse sink %s/%s: writing _cdc_progress failed (%s); the "
                        "positions are kept and written with the next", step_id, partition,
                        type(error).__name__)
            return False
        return True

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - already failing
                log.debug("closing a failed ClickHouse client failed", exc_info=True)

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """Stop the thread and write what is left (a failure is logged: the data is in). A
        write still running after WAIT seconds (the server gone) is left to the process's end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(wait)
            if self._thread.is_alive():
                log.warning("clickhouse sink %s/%s: a _cdc_progress write did not return within "
                            "%.0fs; the last positions are not written", self._where[1],
                            self._where[2], wait)
                return
        self.write_pending()
        self._drop_client()
