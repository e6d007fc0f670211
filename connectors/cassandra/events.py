"""The change event: the one type every stage of the pipeline passes on, defined here only.

A `ChangeEvent` is one change to one row (or static row, range of rows, or whole partition) of
one table, as one replica's commit log recorded it. Granularity (see mutation.py):

- UPSERT: a row (or the static row, `is_static`) that carries cells or primary-key liveness.
  If the same row also carries a row tombstone (a batch that deleted then wrote it), the
  tombstone is in `deletion`: apply it before the cells.
- ROW_DELETE: a row that carries nothing but its tombstone (`deletion`).
- PARTITION_DELETE: the partition-level tombstone (`deletion`); clustering is empty.
- RANGE_DELETE: one closed range tombstone: `range_start`/`range_end` (clustering prefixes,
  possibly empty = unbounded, with inclusive flags) and `deletion`; `clustering` holds the
  longest prefix the two bounds share.

Times are Cassandra's: write timestamps in microseconds (client-chosen), TTLs in seconds, local
deletion/expiration times in seconds since the epoch (None when the cell neither expires nor is a
tombstone). `digest` is a 128-bit BLAKE2b over a canonical encoding of the change's content and
timestamps (table id, raw key and clustering bytes, each cell's name, timestamp, TTL, tombstone
flag, path and raw value; never the node, the position or local deletion times), so the copies
the RF replicas (and hints, which replay the same mutation) write of one change have the same
digest, however the partition update around them was packaged (other rows, other EncodingStats,
other header columns). Data re-written by repair may merge several writes into one row: its
digest then matches none of the originals.

All events of one commit-log entry share its `position`; `seq` numbers them (and its counter
notices) in the order they were written.

The parts of an event (Cell, CellElement, ComplexCell, Liveness, Deletion, RangeBound) are
immutable NamedTuples rather than dataclasses: a frozen dataclass costs about six times as much
to build, and a busy table makes millions of cells. ChangeEvent itself is a frozen, slotted
dataclass.

Decoding never raises into the flow: what cannot be decoded becomes an `UndecodableUpdate`
(raw bytes kept for the dead-letter path), and counter updates, which hold shard contexts and
not values, become `CounterUpdate` notices.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from uuid import UUID

from connectors.pickling import pickled_by_fields

__all__ = [
    "Cell",
    "CellElement",
    "ChangeEvent",
    "ChangeKind",
    "ComplexCell",
    "CounterUpdate",
    "Deletion",
    "Liveness",
    "Position",
    "RangeBound",
    "ErrorRecord",
    "UndecodableUpdate",
]


class ChangeKind(enum.Enum):
    UPSERT = "upsert"
    ROW_DELETE = "row_delete"
    PARTITION_DELETE = "partition_delete"
    RANGE_DELETE = "range_delete"


@pickled_by_fields
@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where an entry ends in one node's commit log: (segment id, offset just after the entry).

    Totally ordered within one node; `seq` on events orders the events of one entry."""

    segment_id: int
    offset: int


class Deletion(NamedTuple):
    """A tombstone: everything with timestamp <= marked_for_delete_at is deleted."""

    marked_for_delete_at: int
    local_deletion_time: int


class Liveness(NamedTuple):
    """Primary-key liveness of a row (INSERT writes it, UPDATE does not)."""

    timestamp: int
    ttl: int = 0
    local_expiration_time: int | None = None


class Cell(NamedTuple):
    """A simple (non-complex) column's cell. `deleted` cells have value None."""

    value: Any
    timestamp: int
    ttl: int = 0
    local_deletion_time: int | None = None
    deleted: bool = False


class CellElement(NamedTuple):
    """One element of a non-frozen collection or UDT.

    path: list -> the element's timeuuid key (UUID); set -> the element; map -> the key;
    UDT -> the field name. value: list/map element value or UDT field value; None for sets and
    for deleted elements."""

    path: Any
    value: Any
    timestamp: int
    ttl: int = 0
    local_deletion_time: int | None = None
    deleted: bool = False


class ComplexCell(NamedTuple):
    """A non-frozen collection or UDT column's change: an optional collection tombstone (an
    overwrite writes one at timestamp - 1) and the elements written or deleted."""

    deletion: Deletion | None
    elements: tuple[CellElement, ...]


class RangeBound(NamedTuple):
    """One end of a range tombstone: a clustering prefix and whether it is included."""

    clustering: Mapping[str, Any]
    inclusive: bool


_set = object.__setattr__


@pickled_by_fields
@dataclass(frozen=True, slots=True, init=False)
class ChangeEvent:
    """One change (see the module docstring). Frozen; `cells`, `partition_key` and `clustering`
    are plain dicts by convention never mutated after decoding."""

    node: str
    position: Position
    seq: int
    keyspace: str
    table: str
    table_id: UUID
    kind: ChangeKind
    partition_key: Mapping[str, Any]
    clustering: Mapping[str, Any]
    cells: Mapping[str, Cell | ComplexCell]
    liveness: Liveness | None
    deletion: Deletion | None
    is_static: bool
    range_start: RangeBound | None
    range_end: RangeBound | None
    digest: bytes

    # Hand-written because the generated __init__ of a frozen dataclass looks object.__setattr__
    # up again for every field: this one is about twice as fast. Same fields, same order.
    def __init__(self, node: str, position: Position, seq: int, keyspace: str, table: str,
                 table_id: UUID, kind: ChangeKind, partition_key: Mapping[str, Any],
                 clustering: Mapping[str, Any], cells: Mapping[str, Cell | ComplexCell],
                 liveness: Liveness | None, deletion: Deletion | None, is_static: bool,
                 range_start: RangeBound | None, range_end: RangeBound | None,
                 digest: bytes) -> None:
        _set(self, "node", node)
        _set(self, "position", position)
        _set(self, "seq", seq)
        _set(self, "keyspace", keyspace)
        _set(self, "table", table)
        _set(self, "table_id", table_id)
        _set(self, "kind", kind)
        _set(self, "partition_key", partition_key)
        _set(self, "clustering", clustering)
        _set(self, "cells", cells)
        _set(self, "liveness", liveness)
        _set(self, "deletion", deletion)
        _set(self, "is_static", is_static)
        _set(self, "range_start", range_start)
        _set(self, "range_end", range_end)
        _set(self, "digest", digest)

    def __repr__(self) -> str:  # the default would print every cell; keep logs readable
        return (f"ChangeEvent({self.kind.name} {self.keyspace}.{self.table} "
                f"pk={dict(self.partition_key)!r} ck={dict(self.clustering)!r} "
                f"cells={sorted(self.cells)!r} at {self.node}:{self.position.segment_id}:"
                f"{self.position.offset}#{self.seq})")


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class CounterUpdate:
    """A write to counter columns: detected and reported, never decoded as values (the commit
    log holds counter contexts, i.e. per-replica shards, not the counter's value)."""

    node: str
    position: Position
    seq: int
    keyspace: str
    table: str
    table_id: UUID
    partition_key: Mapping[str, Any]
    clustering: Mapping[str, Any]
    columns: tuple[str, ...]
    timestamp: int  # the highest write timestamp among those counter cells
    is_static: bool


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class UndecodableUpdate:
    """What could not be decoded, for the dead-letter path: nothing is silently lost.

    `raw` is the whole mutation (the entry's payload) so it can be decoded again once the cause
    is fixed; `mutation_offset` is where in it decoding stopped and `update_index` which
    partition update that was (None when the mutation's own framing is broken)."""

    node: str
    position: Position
    reason: str
    raw: bytes
    keyspace: str | None = None
    table: str | None = None
    table_id: UUID | None = None
    update_index: int | None = None
    mutation_offset: int | None = None

    def __repr__(self) -> str:
        where = f"{self.keyspace}.{self.table}" if self.table else str(self.table_id)
        return (f"UndecodableUpdate({where} at {self.node}:{self.position.segment_id}:"
                f"{self.position.offset} update={self.update_index} "
                f"byte={self.mutation_offset}: {self.reason}; {len(self.raw)} raw bytes)")


# The decoder's error record, under the name the pipeline's dead-letter code uses.
ErrorRecord = UndecodableUpdate
