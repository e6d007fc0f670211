"""The capture as a Bytewax input: one partition per Cassandra node's cdc_raw.

A partition follows its node's segments with the cursor of tail.py and decodes each entry with
mutation.py; its resume state is the cursor (a frozen dataclass: pickles small and stable), so
after a crash Bytewax rebuilds it from the last snapshot and the same records come again in the
same order. What it emits, in stream order:

- ChangeEvent (with node, position and seq), CounterUpdate notices;
- UndecodableUpdate (decoding) and ReadError (framing): the dead-letter branch's input.

Nothing blocks: a poll reads what the node has made durable (the _cdc.idx) and returns; when it
is caught up, the partition sleeps for ``idle_wait`` before looking again (the idx only moves at
each commitlog sync anyway).

Between batches, the partition's SegmentJanitor deletes the segments no restart can need again
(retention.py, docs/adr/0004) and keeps the cdc_raw usage gauges current. A rate limit, when set,
spaces batches so that a partition emits at most that many commit-log entries per second.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.cassandra import start_pins
from connectors.cassandra.events import Position
from connectors.cassandra.mutation import MutationDecoder, messaging_version_for
from connectors.cassandra.retention import RetentionSettings, SegmentJanitor
from connectors.cassandra.schema import SchemaSource
from connectors.cassandra.segment import Entry, ReadError
from connectors.cassandra.tail import Cursor, LocalSegmentStore, SegmentStore, poll
from connectors.health import HEALTH
from connectors.tracing import tracer

log = logging.getLogger(__name__)

MIN_MAX_RECORDS, DEFAULT_MAX_RECORDS, MAX_MAX_RECORDS = 100, 1000, 1000
"""What batching.max_records accepts, and its default, the most accepted: larger batches make
fewer round trips per change (7-18% more changes/s at 1000 than at 500, docs/performance.md)."""


@dataclass(frozen=True)
class NodeSpec:
    """One node whose commit log is captured: a stable name and where its cdc_raw is."""

    name: str
    cdc_raw: Path


class CdcSource(FixedPartitionedSource):
    """Changes of every listed node reachable from this worker; see the module docstring.

    schemas: builds the schema source a partition decodes with (called once per partition, in
        the worker, so no connection is made at flow-definition time).
    max_records: commit-log entries per batch (a micro-batch; each may hold several events).
    until_caught_up: end each partition once it has read everything durable (benchmarks,
        one-off catch-up runs, tests); by default partitions follow their node forever.
    initial: where a node's partition starts when Bytewax has no resume state for it (a new
        pipeline); a node not in it starts at the oldest segment present.
    retention: when consumed segments are deleted (default: never) and the node's capacity.
    max_entries_per_second: a rate limit per partition (None: as fast as it decodes).
    """

    def __init__(
        self,
        nodes: list[NodeSpec],
        schemas: Callable[[], SchemaSource],
        *,
        max_records: int = DEFAULT_MAX_RECORDS,
        idle_wait: timedelta = timedelta(milliseconds=200),
        store: Callable[[NodeSpec], SegmentStore] | None = None,
        until_caught_up: bool = False,
        initial: Mapping[str, Cursor | None] | None = None,
        retention: RetentionSettings | None = None,
        max_entries_per_second: float | None = None,
    ) -> None:
        if len({n.name for n in nodes}) != len(nodes):
            raise ValueError("node names must be unique: they are the partitions' keys")
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        self._nodes = {n.name: n for n in nodes}
        self._schemas = schemas
        self._max_records = max_records
        self._idle_wait = idle_wait
        self._store = store or (lambda node: LocalSegmentStore(node.cdc_raw))
        self._until_caught_up = until_caught_up
        self._initial = dict(initial or {})
        self._retention = retention or RetentionSettings(recovery_directory=None)
        if max_entries_per_second is not None and max_entries_per_second <= 0:
            raise ValueError(f"max_entries_per_second must be > 0, got {max_entries_per_second}")
        self._rate = max_entries_per_second

    def list_parts(self) -> list[str]:
        # Only what this worker can read: Bytewax gives each partition to a worker that has it.
        return [name for name, node in self._nodes.items() if node.cdc_raw.is_dir()]

    def build_part(self, step_id: str, for_part: str, resume_state: Cursor | None):
        node = self._nodes[for_part]
        cursor = resume_state if resume_state is not None else self._initial.get(for_part)
        if resume_state is not None:  # a pinned start_from latest is of no more use
            start_pins.release(self._retention.recovery_directory, node.name)
        store = self._store(node)
        return CdcPartition(node.name, store, self._schemas(), cursor,
                            max_records=self._max_records, idle_wait=self._idle_wait,
                            until_caught_up=self._until_caught_up,
                            janitor=SegmentJanitor(node.name, store, step_id, self._retention),
                            max_entries_per_second=self._rate)


class CdcPartition(StatefulSourcePartition):
    """One node's stream; state is the cursor and nothing else."""

    def __init__(self, node: str, store: SegmentStore, schemas: SchemaSource,
                 cursor: Cursor | None, *, max_records: int, idle_wait: timedelta,
                 until_caught_up: bool = False, janitor: SegmentJanitor | None = None,
                 max_entries_per_second: float | None = None) -> None:
        self._node = node
        self._store = store
        self._schemas = schemas
        self._cursor = cursor
        self._max_records = max_records
        self._idle_wait = idle_wait
        self._decoders: dict[int, MutationDecoder] = {}  # by commit-log version
        self._awake: datetime | None = None
        self._until_caught_up = until_caught_up
        self._finished = False
        self._janitor = janitor
        self._rate = max_entries_per_second
        self._health = f"capture {node}"
        HEALTH.trouble(self._health, "not polled yet")

    def next_batch(self) -> list:
        if self._finished:
            raise StopIteration
        batch = poll(self._store, self._cursor, max_records=self._max_records)
        HEALTH.beat(self._health)
        items: list = []
        if batch.records:  # idle polls make no span
            with tracer().start_as_current_span("capture.decode") as span:
                items = self._decode(batch.records)
                span.set_attributes({"node": self._node, "records": len(batch.records),
                                     "items": len(items), "caught_up": batch.caught_up})
        self._cursor = batch.position
        # The last batch still goes out; the call after it ends the partition.
        self._finished = self._until_caught_up and batch.caught_up
        now = datetime.now(UTC)
        self._awake = (now + self._idle_wait) if batch.caught_up else None
        if self._rate is not None and batch.records:
            paced = now + timedelta(seconds=len(batch.records) / self._rate)
            self._awake = max(self._awake or paced, paced)
        if self._janitor is not None:
            self._janitor.tick(self._cursor)
        return items

    def _decode(self, records: list) -> list:
        """Change events, counter notices and error records of RECORDS, in order."""
        items: list = []
        for record in records:
            if isinstance(record, ReadError):
                log.error("cdc_raw of %s: %s at %s offset %d: %s", self._node, record.kind,
                          record.segment_path, record.offset, record.reason)
                items.append(record)
                continue
            decoded = self._decoder(record).decode(
                record.mutation, Position(record.segment_id, record.end))
            items.extend(decoded.events)
            items.extend(decoded.counters)
            for error in decoded.errors:
                log.error("undecodable update from %s: %r", self._node, error)
            items.extend(decoded.errors)
        return items

    def next_awake(self) -> datetime | None:
        return self._awake

    def close(self) -> None:
        HEALTH.forget(self._health)  # a finished or moved partition is no longer this process's

    def snapshot(self) -> Cursor | None:
        return self._cursor

    def _decoder(self, entry: Entry) -> MutationDecoder:
        decoder = self._decoders.get(entry.version)
        if decoder is None:
            decoder = MutationDecoder(self._schemas,
                                      messaging_version=messaging_version_for(entry.version),
                                      node=self._node)
            self._decoders[entry.version] = decoder
        return decoder


def nodes_from_mapping(cdc_raw_by_node: Mapping[str, str | Path]) -> list[NodeSpec]:
    return [NodeSpec(name, Path(path)) for name, path in cdc_raw_by_node.items()]
