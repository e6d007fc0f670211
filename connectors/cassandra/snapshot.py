"""The initial load as a Bytewax input: the rows that already exist, read by token ranges.

Each captured table's Murmur3 token space (-2**63 .. 2**63-1) is cut into ``splits``
contiguous ranges; each range is one partition, keyed
``"keyspace.table@<table id>[#<generation>]:03/16"``, so a load is spread over the workers and
resumes per range after a crash. The table's id is in the key: a table dropped and created again
under the same name is another table, loaded again. So is the `generation` when it is above 0:
raising it loads every table again (after CDC was switched off and on while the pipeline was
stopped, say: nothing records that, and a finished range stays finished). The ranges of a
table gone since, of another split count or another generation are still listed, as finished
ones, keeping the state they had (connectors/recovery_store.py: Bytewax refuses a recovery store
holding state for a partition no worker lists). A partition pages through

    SELECT <key>, <col>, WRITETIME(<col>) ..., token(<partition key>) FROM ks.t
    WHERE token(<partition key>) > ? AND token(<partition key>) <= ?

(``>=`` for a range's first read: the first range holds the minimum token) and turns each row
into the operation a live change of it would give (connectors/cassandra/images.py, shared with
operators/readback.py):
a RowUpsert per row versioned by its cells' largest write time, and the partition's static row
once, as a separate RowUpsert(static=True).

Resume state: the last token whose rows have all been emitted (None before the first). Rows
come in token order and every row of a Cassandra partition has the same token, but a page can
end in the middle of a token (a partition's rows, or partitions sharing a token), so the rows of
a page's last token are held back until the next page shows a later token: a resume starts
strictly after the state's token and emits nothing twice. One exception keeps memory bounded:
when a single token holds more than a page of rows (a wide partition) they go out a page at a
time and the state stays before that token until it is complete, so a crash inside it re-emits
the partition (harmless: the sinks keep the newer version, docs/adr/0003). A finished range's
state is its last token, and it stays finished after a resume.

Rows are stamped with the `INITIAL_LOAD` source: they come from no commit-log position, so the
sinks record no progress for them (connectors/row_batch.py).

Loaded rows keep write-time versions while captured changes are versioned by their read time
(docs/adr/0003, amendment): a write time is older than any read made after it, so a loaded
image only replaces a captured one that it is newer than. A write time later than the read's
start (a client clock ahead) is taken as that start. A row holding only its primary key
shows no write time:
such rows get version 0 ("exists, time unknown") and lose to any captured change too. Nor does
it show a TTL (CQL cannot select the row marker's): such a row written with a TTL is loaded
without one, so TTL expiry never schedules it, and it stays in the destinations after
Cassandra drops it (a captured change of it carries the TTL, and is scheduled).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from cassandra import ConsistencyLevel, OperationTimedOut, ReadTimeout, Unavailable
from cassandra.cluster import NoHostAvailable
from cassandra.metadata import protect_name
from prometheus_client import Counter

from connectors.cassandra.images import (
    Image,
    image_of,
    select_items,
    static_upsert_of,
    statics_of,
    upsert_of,
)
from connectors.cassandra.schema import ColumnKind, TableSchema
from connectors.cassandra.session import tuple_rows
from connectors.recovery_store import with_state_keys
from connectors.row_sink import with_retries
from operators.row_ops import INITIAL_LOAD, RowUpsert

log = logging.getLogger(__name__)

MIN_TOKEN = -(2**63)
MAX_TOKEN = 2**63 - 1
"""The source of loaded rows: no node, no commit-log position."""

ROWS = Counter("cdc_initial_load_rows", "Rows emitted by the initial load", ["table"])
RANGES_DONE = Counter("cdc_initial_load_ranges_done",
                      "Token ranges the initial load has finished", ["table"])

_UNKNOWN_VERSION = 0


# Read failures worth asking again (SnapshotPartition._read); anything else stops the flow.
_TRANSIENT = (ReadTimeout, Unavailable, OperationTimedOut, NoHostAvailable)


def _at_most(op: RowUpsert, version: int) -> RowUpsert:
    return op if op.version <= version else dataclasses.replace(op, version=version)


def token_ranges(splits: int) -> list[tuple[int, int]]:
    """SPLITS contiguous inclusive ranges [low, high] covering MIN_TOKEN..MAX_TOKEN exactly."""
    if splits < 1:
        raise ValueError(f"splits must be >= 1, got {splits}")
    bounds = [MIN_TOKEN + (i * 2**64) // splits for i in range(splits + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(splits)]


def loadable(table: TableSchema) -> bool:
    """Tables the load reads: CDC tables (not views; counters travel as notices, not images)."""
    return table.cdc and not table.is_view and not table.is_counter


class SnapshotSource(FixedPartitionedSource):
    """Existing rows of every loadable table, one partition per (table, token range).

    session: returns the cassandra-driver session partitions read with (called in the worker,
        so nothing connects at flow definition).
    tables: returns the tables to load (called in the worker); only `loadable` ones are kept.
    splits: token ranges per table (the unit of parallelism and of resume).
    page_size: rows per read (the driver's fetch size), so per batch: a batch holds at most a
        page plus the rows held back from the page before.
    consistency: of the reads.
    """

    def __init__(self, session: Callable[[], Any], tables: Callable[[], Iterable[TableSchema]],
                 *, splits: int = 16, page_size: int = 500,
                 consistency: int = ConsistencyLevel.LOCAL_QUORUM, generation: int = 0,
                 recovery_directory: Path | None = None, step_id: str = "") -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        if generation < 0:
            raise ValueError(f"generation must be >= 0, got {generation}")
        if recovery_directory is not None and not step_id:
            raise ValueError("step_id (\"<flow>.<step>\") is needed with a recovery_directory:"
                             " the ranges the store holds state for are listed by it")
        self._ranges = token_ranges(splits)
        self._generation = generation
        # Where the store is, and this input's full step id in it ("<flow>.<step>"), to list
        # the partitions it holds state for.
        self._recovery_directory = recovery_directory
        self._step_id = step_id
        self._session = session
        self._tables = tables
        self._page_size = page_size
        self._consistency = consistency

    def _loadable(self) -> dict[str, TableSchema]:
        """The tables to load by the name their ranges' keys start with (module docstring)."""
        generation = f"#{self._generation}" if self._generation else ""
        return {f"{t.keyspace}.{t.name}@{t.id}{generation}": t for t in self._tables()
                if loadable(t)}

    def list_parts(self) -> list[str]:
        # The split count is part of the key: with another count the ranges are other ones,
        # so the load starts over rather than resuming states that no longer fit.
        width = len(str(len(self._ranges)))
        return with_state_keys(self._recovery_directory, self._step_id, (
            f"{name}:{i:0{width}d}/{len(self._ranges)}"
            for name in self._loadable() for i in range(len(self._ranges))))

    def build_part(self, step_id: str, for_part: str, resume_state: int | None):
        name, _, split = for_part.rpartition(":")
        index, _, count = split.partition("/")
        table = self._loadable().get(name)
        if table is None or int(count) != len(self._ranges):
            # Listed before (list_parts), not now: its state, if any, is of no more use.
            log.info("initial load %s: %s, nothing to load", for_part,
                     "not a range of the tables to load now (a table dropped or created"
                     " again, another generation)" if table is None else
                     f"a range of {count} splits, where the load now has {len(self._ranges)}")
            return SnapshotPartition(for_part, None, None, 0, 0, resume_state,
                                     page_size=self._page_size, consistency=self._consistency)
        low, high = self._ranges[int(index)]
        return SnapshotPartition(for_part, self._session(), table, low, high, resume_state,
                                 page_size=self._page_size, consistency=self._consistency)


class SnapshotPartition(StatefulSourcePartition):
    """One token range of one table; state is the last token fully emitted."""

    def __init__(self, name: str, session, table: TableSchema | None, low: int, high: int,
                 after: int | None, *, page_size: int, consistency: int,
                 log_every_s: float = 10.0, attempts: int = 5, backoff_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self._name = name
        self._table = table
        self._retry = SimpleNamespace(retry_attempts=attempts, retry_backoff=backoff_s,
                                      retry_max_backoff=backoff_s * 2 ** (attempts - 1))
        self._sleep = sleep
        self._clock = clock  # nanoseconds since the epoch: when each read starts
        self._low, self._high = low, high
        self._after = after
        self._page_size = page_size
        # The last page's trailing token, not yet sent: (token, image, when it was read).
        self._held: list[tuple[int, Image, int]] = []
        self._last_partition: tuple | None = None  # statics go out once per partition
        self._paging_state: bytes | None = None
        self._emitted = 0
        self._log_every = log_every_s
        self._logged = time.monotonic()
        self._nothing = table is None
        if table is None:  # nothing to load (SnapshotSource.build_part says why); the state
            return  # it had stays as it was, for a later start it fits again
        if self.done:
            return  # finished before a restart: nothing to prepare
        self._session = session
        self._tuples = tuple_rows(session)
        self._key_columns = [c.name for c in table.partition_key + table.clustering]
        self._partition_columns = [c.name for c in table.partition_key]
        self._clustering_columns = [c.name for c in table.clustering]
        self._regular = [c for c in table.columns.values() if c.kind is ColumnKind.REGULAR]
        self._static = [c for c in table.columns.values() if c.kind is ColumnKind.STATIC]
        self._columns = self._regular + self._static
        token = f"token({', '.join(protect_name(c) for c in self._partition_columns)})"
        items = ", ".join([*select_items(self._key_columns, self._columns), token])
        source = f"{protect_name(table.keyspace)}.{protect_name(table.name)}"

        def prepare(low_op: str):
            statement = session.prepare(  # identifiers quoted by the driver's protect_name
                f"SELECT {items} FROM {source} "  # noqa: S608
                f"WHERE {token} {low_op} ? AND {token} <= ?")
            statement.consistency_level = consistency
            statement.fetch_size = page_size
            return statement

        # The query of this partition object: from the range's start, or strictly after the
        # resume token; later pages continue it through the driver's paging state.
        self._statement = prepare(">=" if after is None else ">")
        self._params = [low if after is None else after, high]

    @property
    def done(self) -> bool:
        return self._nothing or self._after == self._high

    def next_batch(self) -> list[RowUpsert]:
        """One page: its rows (and the page before's held-back ones) as operations."""
        if self.done:
            raise StopIteration
        read_at = self._clock() // 1000
        result = self._read()
        page = [(row[-1], image_of(row, self._key_columns, self._columns), read_at)
                for row in result.current_rows]
        self._paging_state = result.paging_state
        rows = self._held + page
        if self._paging_state is None:  # the range is complete
            ready, self._held, complete = rows, [], self._high
        elif not rows:
            ready, complete = [], self._after
        else:
            # The page's last token may continue on the next page: hold its rows back.
            last = rows[-1][0]
            cut = len(rows)
            while cut > 0 and rows[cut - 1][0] == last:
                cut -= 1
            ready, self._held = rows[:cut], rows[cut:]
            complete = rows[cut - 1][0] if cut else self._after
            if len(self._held) > self._page_size:
                # One wide token: send it now, the state stays before it (module docstring).
                ready, self._held = rows, []
        batch = self._operations(ready)
        self._after = complete
        self._progress(len(ready))
        return batch

    def _read(self):
        """This range's next page. What is likely to pass if asked again (a timeout, too few
        replicas, no host reachable) is asked again, up to `attempts` times in all, waiting
        `backoff_s`, then twice that, and so on, before it stops the flow (the sinks' retry,
        connectors/row_sink.py): a large table's load meets them under load, and a stop takes
        the capture down with it."""
        return with_retries(
            lambda: self._session.execute(self._statement, self._params,
                                          paging_state=self._paging_state,
                                          execution_profile=self._tuples),
            transient=lambda error: isinstance(error, _TRANSIENT), settings=self._retry,
            sleep=self._sleep, what=f"initial load {self._name}")

    def _operations(self, rows: list[tuple[int, Image, int]]) -> list[RowUpsert]:
        """The rows' operations. A version is at most when the row's read started (a held-back
        row's: the page before's): a write time later than that (a client clock ahead, USING
        TIMESTAMP in the future) would otherwise outrank the changes captured after that read,
        and this older state would stay over them."""
        table = self._table
        assert table is not None
        ops: list[RowUpsert] = []
        for _, image, read_at in rows:
            partition = tuple(image.key[c] for c in self._partition_columns)
            if self._static and partition != self._last_partition:
                statics = statics_of(table, image)
                static = static_upsert_of(table, statics.key, statics, INITIAL_LOAD)
                if static is not None:
                    ops.append(_at_most(static, read_at))
            self._last_partition = partition
            if any(image.key[c] is None for c in self._clustering_columns):
                continue  # a partition with static cells and no rows: only its static row
            ops.append(_at_most(upsert_of(table, image, INITIAL_LOAD,
                                          version_if_unknown=lambda: _UNKNOWN_VERSION),
                                read_at))
        return ops

    def _progress(self, rows: int) -> None:
        assert self._table is not None
        self._emitted += rows
        ROWS.labels(f"{self._table.keyspace}.{self._table.name}").inc(rows)
        if self.done:
            RANGES_DONE.labels(f"{self._table.keyspace}.{self._table.name}").inc()
            log.info("initial load %s: done, %d rows", self._name, self._emitted)
        elif time.monotonic() - self._logged >= self._log_every:
            self._logged = time.monotonic()
            log.info("initial load %s: %d rows, %.1f%% of the token range", self._name,
                     self._emitted, 100 * self.fraction)

    @property
    def fraction(self) -> float:
        """Share of the range's tokens fully emitted."""
        if self._after is None:
            return 0.0
        return (self._after - self._low + 1) / (self._high - self._low + 1)

    def snapshot(self) -> int | None:
        return self._after
