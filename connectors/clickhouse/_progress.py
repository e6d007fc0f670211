"""_cdc_progress rows of one sink partition, written off the data path.

A progress row says how far the partition's data is in ClickHouse: per node, the highest
commit-log position whose row operations were inserted. Every insert makes a part (a directory
of files on the server, merged later in the background), and ClickHouse wants about one insert
per second per table, not one per batch: a one-row progress insert after each 10k-row batch
took about 6.5 ms of its ~70 (docs/performance.md), and a busy flow writing small batches
would make parts in _cdc_progress faster than merges remove them.

So a batch's positions are recorded once its data inserts have returned (never before), and a
thread of the partition writes what was recorded at most every `interval` seconds, on its own
client (the data path's client holds a session, which takes one query at a time), and a last
time at close. Interval 0 writes after every batch on the data path, its errors raised there.

_cdc_progress is a lower bound. Between writes it says less than what was applied. A crash
loses the positions recorded since the last write, and the batches they came from are not
written again (the spool, or Bytewax, already counted them done): the row of that node and
partition then stays behind until the partition writes another of the node's changes.

A failed write keeps its positions for the next. One the sink's rule calls transient (the
server unreachable, a timeout) is counted and logged once per outage; any other (the table
dropped, a grant revoked) is raised by the next batch, on the data path, so the flow stops
on it as it would on a failed data insert: progress never stops advancing unnoticed. The
last write, at close, has no next batch to raise its failure: it is logged (an error when
retrying cannot fix it), with how many nodes' positions stay unwritten.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from clickhouse_connect.driver.binding import quote_identifier as q
from clickhouse_connect.driver.client import Client
from prometheus_client import Counter

from connectors.cassandra.events import Position
from connectors.clickhouse._client import close_quietly
from connectors.clickhouse._ddl import PROGRESS_TABLE
from connectors.row_batch import merge_highest

__all__ = ["ProgressWriter", "insert_progress"]

log = logging.getLogger(__name__)

CLOSE_WAIT = 30.0  # seconds close() waits for the last write

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


class ProgressWriter:
    """The progress of one sink partition (see the module docstring).

    connect() -> a new client for the writer's thread; interval: seconds between writes
    (ClickHouseSinkSettings.progress_interval), 0 for a write after every batch;
    transient(error): whether a failed write may pass later (the sink's rule). The thread
    starts at the first `record`."""

    def __init__(self, connect: Callable[[], Client], database: str, step_id: str,
                 partition: int, interval: float,
                 transient: Callable[[BaseException], bool]) -> None:
        self._connect = connect
        self._where = (database, step_id, partition)
        self._interval = interval
        self._transient = transient
        # A failure retrying cannot fix (the table dropped, a grant gone): raised by the next
        # `record`, on the data path, so the flow stops on it as on a failed data insert.
        self._failure: BaseException | None = None
        self._pending: dict[str, Position] = {}
        self._lock = threading.Lock()  # guards _pending, _failure and _thread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Client | None = None  # the thread's own
        self._failing = False  # the last write failed (logged once per outage)
        self._last_error = ""  # the class of the last failed write's error

    def record(self, positions: Mapping[str, Position], client: Client) -> None:
        """POSITIONS (node -> highest) of a batch whose data is in. With interval 0 they are
        written now through CLIENT (the data path's), and a failure raises."""
        if not positions:
            return
        if self._interval == 0:
            insert_progress(client, *self._where, positions)
            return
        with self._lock:  # the thread sets _failure under it: none is lost in between
            if self._stop.is_set():
                raise RuntimeError(f"progress of {self._what()} recorded after close")
            # Kept for the next write, also when a failure is raised below: written once the
            # cause is mended.
            merge_highest(self._pending, positions)
            failure, self._failure = self._failure, None
            if failure is None and self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name=f"progress-{self._what()}")
                self._thread.start()
        if failure is not None:
            raise failure

    def _what(self) -> str:
        return f"clickhouse sink {self._where[1]}/{self._where[2]}"

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._interval):
                self._write_pending()
            self._write_pending()  # the last, at close
        finally:
            client, self._client = self._client, None
            close_quietly(client)

    def _write_pending(self) -> None:
        """Write what was recorded and not yet written, on the thread's client. A failure is
        counted and logged (once per outage) and the rows are kept for the next write: the
        data they describe is in already."""
        with self._lock:
            positions, self._pending = self._pending, {}
        if not positions:
            return
        try:
            if self._client is None:
                self._client = self._connect()
            insert_progress(self._client, *self._where, positions)
        except Exception as error:  # noqa: BLE001 - kept and retried at the next write
            transient = self._transient(error)
            with self._lock:
                merge_highest(self._pending, positions)
                self._last_error = type(error).__name__  # the class only: messages quote
                if not transient:
                    self._failure = error
            client, self._client = self._client, None
            close_quietly(client)
            PROGRESS_WRITE_ERRORS.labels(self._where[1], str(self._where[2])).inc()
            if not transient:
                return
            if not self._failing:
                # The class only: a server message can quote values.
                log.warning("%s: writing _cdc_progress failed (%s); the positions are kept "
                            "and written with the next", self._what(), type(error).__name__)
            self._failing = True
            return
        if self._failing:
            log.info("%s: _cdc_progress written again", self._what())
        self._failing = False

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """Stop the thread after it writes what is left. If that fails, it is logged, not
        raised (the data is in): an error for a failure retrying cannot fix, a warning for
        one it could. A write still running after WAIT seconds (the server gone) is left to
        the process's end; its positions are not written."""
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is None:
            return
        thread.join(wait)
        if thread.is_alive():
            log.warning("%s: the last _cdc_progress write did not return within %.0fs; its "
                        "positions are not written", self._what(), wait)
            return
        with self._lock:
            failure, self._failure = self._failure, None
            unwritten = len(self._pending)
        if unwritten:
            log.log(logging.WARNING if failure is None else logging.ERROR,
                    "%s: the last _cdc_progress write failed (%s%s); the positions of %d "
                    "node(s) are not written, so _cdc_progress stays behind the data until the "
                    "partition writes their changes again", self._what(), self._last_error,
                    "" if failure is None else ", which retrying cannot fix", unwritten)
