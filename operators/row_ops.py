"""What the sinks apply: the current state of rows, read back from Cassandra (docs/adr/0003).

Every destination keeps one row per Cassandra row (and one per partition for static columns),
plus the row's ``version`` and a ``deleted`` flag. An operation carries a version; a sink
applies it only where the stored version is not newer (``stored <= op.version``), so replays
and late copies can never move a row back in time, and a deleted row is a versioned tombstone
that an older image cannot resurrect.

Versions are Cassandra write timestamps in microseconds: the largest write time of the row's
cells as read back (row upserts), or the tombstone's timestamp (deletes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from connectors.cassandra.events import Position
from connectors.pickling import pickled_by_fields


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Source:
    """Where the change that caused an operation came from: for progress rows and lag."""

    node: str
    position: Position

    @property
    def in_commit_log(self) -> bool:
        """False for rows of the initial load and of TTL expiry: they have no commit-log
        position, so they record no progress (a progress row at 0/0 would read as permanent
        lag)."""
        return self.node not in NOT_IN_COMMIT_LOG


INITIAL_LOAD_NODE = "initial-load"
INITIAL_LOAD = Source(INITIAL_LOAD_NODE, Position(0, 0))
"""The source of the initial load's rows (connectors/cassandra/snapshot.py)."""
EXPIRY_NODE = "ttl-expiry"
EXPIRY = Source(EXPIRY_NODE, Position(0, 0))
"""The source of rows read again when their TTL ran out (connectors/cassandra/expiry.py)."""
NOT_IN_COMMIT_LOG = frozenset({INITIAL_LOAD_NODE, EXPIRY_NODE})
"""The nodes of sources without a commit-log position (see Source.in_commit_log)."""
# The node an operation came from (C-level, for loops over whole batches: spool_format,
# range_tombstones).
source_node_of = attrgetter("source.node")


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class RowUpsert:
    """A row as it is now: every primary-key column in ``key`` (partition then clustering
    columns), every regular column in ``values`` (None for null). Static rows: ``static`` is
    True, ``key`` holds the partition key only and ``values`` the static columns."""

    keyspace: str
    table: str
    key: Mapping[str, Any]
    values: Mapping[str, Any]
    version: int
    source: Source
    static: bool = False
    # When the next of its cells (or its liveness) expires, in microseconds since the epoch:
    # the row is read again then (connectors/cassandra/expiry.py); None: nothing expires.
    expires: int | None = None


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class RowDelete:
    """The row (or static row) with this full key no longer exists, as of ``version``."""

    keyspace: str
    table: str
    key: Mapping[str, Any]
    version: int
    source: Source
    static: bool = False


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class ClusteringBound:
    """One end of a clustering range: a prefix of the clustering columns (empty: unbounded)."""

    prefix: Mapping[str, Any]
    inclusive: bool


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class RangeDelete:
    """Rows of one partition within [start, end] (clustering order, per the table's ASC/DESC),
    or every row of it when both bounds are empty, deleted as of ``version``: stored rows
    whose version is <= ``version`` go; newer ones survive (Cassandra keeps them too).
    ``include_static`` also deletes the partition's static row (a partition deletion)."""

    keyspace: str
    table: str
    partition_key: Mapping[str, Any]
    start: ClusteringBound
    end: ClusteringBound
    version: int
    source: Source
    include_static: bool = False


RowOp = RowUpsert | RowDelete | RangeDelete
