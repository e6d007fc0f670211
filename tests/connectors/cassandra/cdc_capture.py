"""Test helper: the change events a workload produces on a real node, read back from cdc_raw.

    cap = CdcCapture(sess, keyspace, cdc_raw_dir)      # creates the sentinel table once
    result = cap.run(workload, tables=["t"])           # cursor at the end, workload, sentinel

`run` takes the cursor at the current end of the node's cdc_raw, runs the workload, then writes
a row with a fresh uuid to the keyspace's sentinel table (cdc = true) and polls until the entry
holding that uuid arrives: Cassandra syncs a segment in order, so everything the workload wrote
before it is then readable too. Entries of the given tables (found by their table id bytes)
are decoded with a fresh SchemaRegistry of the keyspace.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from connectors.cassandra.cdc_index import CdcIndex
from connectors.cassandra.events import ChangeEvent, Position, UndecodableUpdate
from connectors.cassandra.mutation import DecodedMutation, MutationDecoder, messaging_version_for
from connectors.cassandra.schema import SchemaRegistry
from connectors.cassandra.segment import Entry, ReadError
from connectors.cassandra.tail import Cursor, LocalSegmentStore, SegmentFile, poll

SENTINEL = "cdc_sentinel"
WAIT = 45.0  # seconds for the sentinel: many sync periods (1 s) on a busy 2-core machine


def drain(store: LocalSegmentStore, position: Cursor | None
          ) -> tuple[list[Entry | ReadError], Cursor]:
    records: list[Entry | ReadError] = []
    while True:
        batch = poll(store, position, max_records=2000)
        records += batch.records
        position = batch.position
        if batch.caught_up:
            return records, position


def end_cursor(store: LocalSegmentStore) -> Cursor:
    """The cursor after everything readable now, without reading the whole history: start at
    the newest segment that has an index (older ones are closed and not our business)."""
    indexed = [s for s in store.segments() if isinstance(store.index(s), CdcIndex)]
    start = Cursor(indexed[-1].segment_id) if indexed else None
    _, position = drain(store, start)
    return position


def table_id(sess, keyspace: str, table: str) -> uuid.UUID:
    return sess.execute(
        "SELECT id FROM system_schema.tables WHERE keyspace_name = %s AND table_name = %s",
        (keyspace.strip('"'), table)).one().id


@dataclass
class Capture:
    start: Cursor
    end: Cursor
    records: list[Entry | ReadError]  # every record between start and the sentinel (included)
    entries: list[Entry]  # the entries holding an update of one of the tables
    decoded: list[DecodedMutation]  # one per entry of `entries`
    read_errors: list[ReadError] = field(default_factory=list)

    @property
    def events(self) -> list[ChangeEvent]:
        return [e for d in self.decoded for e in d.events]

    @property
    def errors(self) -> list[UndecodableUpdate]:
        return [e for d in self.decoded for e in d.errors]


class CdcCapture:
    def __init__(self, sess, keyspace: str, cdc_raw: Path, *, node: str = "node1",
                 version: int | None = None) -> None:
        self.version = version  # the cluster's commit-log version, for callers' bookkeeping
        self.sess = sess
        self.keyspace = keyspace
        self.store = LocalSegmentStore(cdc_raw)
        self.node = node
        sess.execute(f"CREATE TABLE IF NOT EXISTS {keyspace}.{SENTINEL} "
                     "(id uuid PRIMARY KEY, pad blob) WITH cdc = true")
        self.sentinel_id = table_id(sess, keyspace, SENTINEL)
        self._sentinel = sess.prepare(f"INSERT INTO {keyspace}.{SENTINEL} (id, pad) VALUES (?, ?)")

    def registry(self) -> SchemaRegistry:
        return SchemaRegistry.from_session(self.sess, [self.keyspace.strip('"')],
                                           min_refresh_interval=0.0)

    def pad(self, total: int, chunk: int = 200_000) -> None:
        """Write TOTAL bytes of blobs to the sentinel table (fills segments so they close)."""
        for _ in range(0, total, chunk):
            self.sess.execute(self._sentinel, (uuid.uuid4(), b"\x5a" * chunk))

    def run(self, workload: Callable[[], None], tables: Iterable[str], *,
            start: Cursor | None = None) -> Capture:
        ids = [table_id(self.sess, self.keyspace, t).bytes for t in tables]
        start = end_cursor(self.store) if start is None else start
        workload()
        marker = uuid.uuid4()
        self.sess.execute(self._sentinel, (marker, b""))
        records: list[Entry | ReadError] = []
        position = start
        deadline = time.monotonic() + WAIT
        while True:
            new, position = drain(self.store, position)
            records += new
            done = next((i for i, r in enumerate(records) if isinstance(r, Entry)
                         and self.sentinel_id.bytes in r.mutation and marker.bytes in r.mutation),
                        None)
            if done is not None:
                records = records[:done + 1]
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"sentinel write not in cdc_raw after {WAIT} s")
            time.sleep(0.1)
        entries = [r for r in records if isinstance(r, Entry) and any(i in r.mutation for i in ids)]
        decoded = self.decode(entries)
        return Capture(start, position, records, entries, decoded,
                       [r for r in records if isinstance(r, ReadError)])

    def decode(self, entries: Iterable[Entry]) -> list[DecodedMutation]:
        decoders: dict[int, MutationDecoder] = {}
        registry = self.registry()
        out = []
        for entry in entries:
            decoder = decoders.get(entry.version)
            if decoder is None:
                decoder = decoders[entry.version] = MutationDecoder(
                    registry, messaging_version=messaging_version_for(entry.version),
                    node=self.node)
            out.append(decoder.decode(entry.mutation, Position(entry.segment_id, entry.end)))
        return out

    def segment_of(self, segment_id: int) -> SegmentFile:
        return next(s for s in self.store.segments() if s.segment_id == segment_id)

    def wait_completed(self, segment_id: int, timeout: float = 60.0) -> SegmentFile:
        """Pad until the segment is closed: its idx says COMPLETED (its content is final)."""
        deadline = time.monotonic() + timeout
        while True:
            segment = self.segment_of(segment_id)
            index = self.store.index(segment)
            if isinstance(index, CdcIndex) and index.completed:
                return segment
            if time.monotonic() > deadline:
                raise AssertionError(f"segment {segment_id} not COMPLETED after {timeout} s")
            self.pad(400_000)
            time.sleep(0.5)
