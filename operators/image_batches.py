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

Fewer round trips still: partitions whose every event is a change of the one row a simple
table keys by partition (``can_read_at_once``) are read many rows per request first
(``read_at_once``, `key IN ?`; on this machine a single-row read costs about as much as a
50-row one). A partition any of whose events that read does not serve (the row absent, or not
reflecting the change yet) goes the ordered way above instead, as if nothing had been read.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from connectors.cassandra.events import ChangeEvent
from connectors.tracing import tracer
from operators.row_ops import RowOp

K = TypeVar("K", bound=Hashable)


class ImageBatches:
    """(key, event) batches -> (key, operation) lists, partitions read concurrently."""

    def __init__(self, operations: Callable[[ChangeEvent], list[RowOp]], *,
                 concurrency: int = 16,
                 can_read_at_once: Callable[[ChangeEvent], bool] | None = None,
                 read_at_once: Callable[..., list[list[RowOp] | None]] | None = None) -> None:
        """read_at_once(events, map_chunks=...) -> per event its operations or None (see the
        module docstring); map_chunks(fn, items) runs its requests on this pool."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if (can_read_at_once is None) != (read_at_once is None):
            raise ValueError("can_read_at_once and read_at_once go together")
        self._operations = operations
        self._concurrency = concurrency
        self._can_read_at_once = can_read_at_once
        self._read_at_once = read_at_once
        self._pool: ThreadPoolExecutor | None = None

    def __call__(self, batch: Sequence[tuple[K, ChangeEvent]]) -> list[tuple[K, RowOp]]:
        with tracer().start_as_current_span("row_images") as span:
            groups: dict[tuple, list[tuple[K, ChangeEvent]]] = {}
            for key, event in batch:
                groups.setdefault(_partition_of(event), []).append((key, event))
            done = self._at_once(groups)
            rest = [group for partition, group in groups.items() if partition not in done]
            if len(rest) <= 1 or self._concurrency == 1:
                ordered: Iterable[list[tuple[K, RowOp]]] = map(self._in_order, rest)
            else:
                ordered = self._map(self._in_order, rest)
            out = [out for result in (*done.values(), *ordered) for out in result]
            span.set_attributes({"events": len(batch), "operations": len(out),
                                 "partitions": len(groups), "partitions_at_once": len(done)})
            return out

    def _map(self, fn: Callable, items: Iterable) -> Iterable:
        if self._pool is None:  # made on first use, in the worker (never at flow definition)
            self._pool = ThreadPoolExecutor(self._concurrency,
                                            thread_name_prefix="row-images")
        return self._pool.map(fn, items)

    def _at_once(self, groups: dict[tuple, list[tuple[K, ChangeEvent]]]
                 ) -> dict[tuple, list[tuple[K, RowOp]]]:
        """The outputs of the partitions `read_at_once` served whole."""
        if self._can_read_at_once is None or self._read_at_once is None:
            return {}
        eligible = {partition: group for partition, group in groups.items()
                    if all(self._can_read_at_once(event) for _, event in group)}
        if not eligible:
            return {}
        events = [event for group in eligible.values() for _, event in group]
        results = iter(self._read_at_once(events, map_chunks=self._map))
        done: dict[tuple, list[tuple[K, RowOp]]] = {}
        for partition, group in eligible.items():
            served = [next(results) for _ in group]
            if all(ops is not None for ops in served):
                done[partition] = [(key, op) for (key, _), ops in zip(group, served, strict=True)
                                   for op in ops]
        return done

    def _in_order(self, group: list[tuple[K, ChangeEvent]]) -> list[tuple[K, RowOp]]:
        return [(key, operation) for key, event in group
                for operation in self._operations(event)]


def _partition_of(event: ChangeEvent) -> tuple:
    # repr: key values may be unhashable (a frozen list decodes to a list); as in dedup's buckets
    return (event.table_id, repr(tuple(event.partition_key.items())))
