"""The range and partition deletions a sink partition wrote lately, against loaded rows that
arrive after them.

The initial load's images travel from the worker that read them; a range or partition deletion
of their partition made after that read comes through the capture on another path, and can
reach the sink partition first. The sinks keep no range tombstones, so the loaded image, older
than the deletion, would then be written as a new row and stay until the row's next change
(dataflows/initial_load.py). Each sink partition therefore remembers the range deletions it
wrote in the last `window_s` seconds (at most `max_entries`, oldest forgotten first), and drops
an initial-load upsert one of them covers with a version at or below the deletion's (a read
time, docs/adr/0003). Dropping never loses a live row: a row written again before the
deletion's read comes back as a survivor of that read, one written after it as its own change,
both captured, with newer versions. Captured images need no screening: a partition's changes
stay in order on one path, so a deletion is never overtaken by an image read before it.

Values are compared as they reach the sink (masked: HMACs and tokens are deterministic, so equal
keys stay equal); a range bound on a masked clustering column is refused by the sinks anyway,
and is not remembered here (a whole-partition deletion is). The memory is per process: after a
restart, a loaded image replayed or drained after a deletion the process wrote before it stops
is not screened.
"""
from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from connectors.clustering import ClusteringColumn, UnsupportedRange, in_range
from operators.row_ops import (
    INITIAL_LOAD_NODE,
    RangeDelete,
    RowOp,
    RowUpsert,
    source_node_of,
)

__all__ = ["RangeTombstones"]


DROPPED = Counter("cdc_sink_loaded_rows_deleted_since_total",
                  "Initial-load rows a sink dropped: a range or partition deletion made after "
                  "the load read them had reached it first", ["sink", "table"])


@dataclass(frozen=True, slots=True)
class _Tombstone:
    table: tuple[str, str]
    partition: bytes  # digest of the partition key's values (`_partition_id`)
    bounds: str  # repr of the range's bounds: the same deletion is remembered once
    contains: Callable[[Mapping[str, Any]], bool]
    version: int
    include_static: bool
    at: float


def _partition_id(key: Mapping[str, Any], layout: Any) -> bytes:
    """A partition's identity: a digest of the repr of its key values (values may be
    unhashable, a frozen list; repr tells apart what Cassandra's bytes tell apart, 1.0 from
    1.00; a digest keeps a long text key from being held)."""
    values = repr(tuple(key.get(c.name) for c in layout.partition))
    return hashlib.blake2b(values.encode(), digest_size=16).digest()


class RangeTombstones:
    """One sink partition's recent range deletions; `screen` each batch before writing it.

    layout_of(keyspace, table) -> the table's layout (its partition and clustering columns).
    max_entries bounds the memory whatever the tables' sizes: under a kilobyte each (10,000
    deletions of two-column ranges held 7.5 MB, by tracemalloc); a partition that writes more
    deletions than that in `window_s` keeps the latest."""

    def __init__(self, sink: str, layout_of: Callable[[str, str], Any], *,
                 window_s: float = 600.0, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sink = sink
        self._layout_of = layout_of
        self._window = window_s
        self._max = max_entries
        self._clock = clock
        self._order: deque[_Tombstone] = deque()  # oldest first
        self._by_partition: dict[tuple[tuple[str, str], bytes], list[_Tombstone]] = {}
        self._clustering: dict[tuple[str, str], tuple[Any, tuple[ClusteringColumn, ...]]] = {}

    def __len__(self) -> int:
        return len(self._order)

    def screen(self, ops: list[RowOp]) -> list[RowOp]:
        """OPS without the initial-load upserts a remembered deletion covers; the range
        deletions among OPS are remembered (before the operations after them are screened)."""
        if RangeDelete not in set(map(type, ops)) and (
                not self._order or INITIAL_LOAD_NODE not in set(map(source_node_of, ops))):
            return ops  # the usual batch: nothing to remember, nothing loaded to screen
        self._forget(self._clock() - self._window)
        kept: list[RowOp] = []
        for op in ops:
            if isinstance(op, RangeDelete):
                self._remember(op)
            elif isinstance(op, RowUpsert) and op.source.node == INITIAL_LOAD_NODE and \
                    self._covers(op):
                DROPPED.labels(self._sink, f"{op.keyspace}.{op.table}").inc()
                continue
            kept.append(op)
        return kept

    def _remember(self, op: RangeDelete) -> None:
        layout = self._layout_of(op.keyspace, op.table)
        try:
            contains = in_range(self._clustering_of(layout), op.start, op.end)
        except UnsupportedRange:
            return  # the sink refuses this deletion itself
        table = (op.keyspace, op.table)
        partition = _partition_id(op.partition_key, layout)
        bounds = repr((op.start, op.end))
        same = self._by_partition.setdefault((table, partition), [])
        if any(t.version == op.version and t.bounds == bounds and
               t.include_static == op.include_static for t in same):
            return  # a batch written again (a retry, a replay): remembered already
        tombstone = _Tombstone(table, partition, bounds, contains, op.version,
                               op.include_static, self._clock())
        self._order.append(tombstone)
        same.append(tombstone)
        while len(self._order) > self._max:
            self._drop_oldest()

    def _clustering_of(self, layout: Any) -> tuple[ClusteringColumn, ...]:
        """The layout's clustering columns, made once per layout (every remembered deletion of
        a table shares them)."""
        table = (layout.keyspace, layout.table)
        known = self._clustering.get(table)
        if known is None or known[0] is not layout:
            known = self._clustering[table] = (layout, layout.clustering_columns())
        return known[1]

    def _covers(self, op: RowUpsert) -> bool:
        layout = self._layout_of(op.keyspace, op.table)
        table = (op.keyspace, op.table)
        found = self._by_partition.get((table, _partition_id(op.key, layout)))
        if not found:
            return False
        clustering = {c.name: op.key.get(c.name) for c in layout.clustering}
        return any(t.version >= op.version and
                   (t.include_static if op.static else t.contains(clustering))
                   for t in found)

    def _forget(self, before: float) -> None:
        while self._order and self._order[0].at < before:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        oldest = self._order.popleft()
        same = self._by_partition[(oldest.table, oldest.partition)]
        del same[0]  # also the oldest of its partition: both keep the order remembered
        if not same:
            del self._by_partition[(oldest.table, oldest.partition)]
