"""Row images for a micro-batch of change events, with the reads of different partitions in
flight at once.

A read back from Cassandra is a network round trip (milliseconds) and the pipeline did one per
change, one after the other: the benchmark found the workers waiting on the driver most of the
time. Here a batch's events are grouped by Cassandra partition (table id and partition key);
each group is worked through IN ORDER by one thread, so everything ADR 0003 relies on holds
within a partition (sequential reads, later reads get later versions, a range delete's
re-read follows it), while groups, which share no row, run concurrently. The result keeps the
batch's order within each partition; across partitions order never mattered.

The driver is thread-safe and releases the GIL while it waits, so threads overlap the round
trips; ``concurrency`` bounds the reads in flight (and so the load put on Cassandra).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from connectors.cassandra.events import ChangeEvent
from operators.row_ops import RowOp

K = TypeVar("K", bound=Hashable)


class ImageBatches:
    """(key, event) batches -> (key, operation) lists, partitions read concurrently."""

    def __init__(self, operations: Callable[[ChangeEvent], list[RowOp]], *,
                 concurrency: int = 16) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self._operations = operations
        self._concurrency = concurrency
        self._pool: ThreadPoolExecutor | None = None

    def __call__(self, batch: Sequence[tuple[K, ChangeEvent]]) -> list[tuple[K, RowOp]]:
        groups: dict[tuple, list[tuple[K, ChangeEvent]]] = {}
        for key, event in batch:
            groups.setdefault(_partition_of(event), []).append((key, event))
        if len(groups) <= 1 or self._concurrency == 1:
            return [out for group in groups.values() for out in self._in_order(group)]
        if self._pool is None:  # made on first use, in the worker (never at flow definition)
            self._pool = ThreadPoolExecutor(self._concurrency,
                                            thread_name_prefix="row-images")
        results = self._pool.map(self._in_order, groups.values())
        return [out for result in results for out in result]

    def _in_order(self, group: list[tuple[K, ChangeEvent]]) -> list[tuple[K, RowOp]]:
        return [(key, operation) for key, event in group
                for operation in self._operations(event)]


def _partition_of(event: ChangeEvent) -> tuple:
    # repr: key values may be unhashable (a frozen list decodes to a list); as in dedup's buckets
    return (event.table_id, repr(tuple(event.partition_key.items())))
