"""Following one node's cdc_raw directory: a durable cursor over its segments, in order.

The cursor is a ``Cursor``: a segment id and a logical offset in it (the ``end`` of the last
entry handed out, or the ``resume_at`` of the last error record), plus ``done`` once the segment
has been read to its end. Nothing else is state, so a position saved with a Bytewax snapshot is
all it takes to resume after a crash, and replay from it yields exactly the same records.

Which bytes of a segment may be read (cassandra-cdc.md section 1):

- its _cdc.idx says ``<offset>``: up to that offset (the node may still be writing after it);
- it says ``<offset>\\nCOMPLETED``: the whole segment, to its end marker;
- it has no readable idx (missing, or caught empty mid-rewrite): nothing yet;
- UNLESS a later segment already has an idx: then this one is read to its end marker, whatever
  its own idx says. Cassandra syncs segments in order, waiting for every write into a section,
  and a segment only gets an idx when a sync covers it, so a later segment with an idx means
  this one is closed and its content final. That covers a node killed before it wrote COMPLETED
  (the entries after its last sync are real: the process died, not the page cache, and the
  node's own replay applies them) and a segment pre-allocated but never used (no entries).
  Bytes torn by a machine crash fail their CRCs and become error records, not silence.

Segments are visited in id order (ids grow with time on one node); a segment that disappears
between listing and reading (deleted by its owner after full consumption) is skipped only if the
cursor is already past it; otherwise that is an error: the consumer must not lose it. Except a
segment read without an idx of its own (a later one has one): Cassandra links every segment
into cdc_raw and deletes the link of one that holds no CDC data when it discards it (a flush,
or the replay after a restart), so its disappearing loses nothing the capture wanted, and
waiting for it would stop the node's capture for good (and fill cdc_raw).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from connectors.cassandra.cdc_index import CdcIndex, IndexNotReady, read_cdc_index
from connectors.cassandra.segment import Entry, ReadError, read_segment

log = logging.getLogger(__name__)

_SEGMENT = re.compile(r"^CommitLog-(\d+)-(\d+)\.log$")


@dataclass(frozen=True, order=True)
class Cursor:
    """Where a node's stream stands: everything before (segment_id, offset) was handed out.

    ``offset`` 0 means "from the beginning of the segment"; ``done`` means the whole segment was.
    Positions order the way the stream does.
    """

    segment_id: int
    offset: int = 0
    done: bool = False
    # The segment is being read without an idx of its own: its deletion by Cassandra means it
    # held no CDC data (see the module docstring). Not part of the order.
    unindexed: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class SegmentFile:
    segment_id: int
    version: int
    path: Path

    @property
    def index_path(self) -> Path:
        return self.path.with_name(f"{self.path.stem}_cdc.idx")


class SegmentStore(Protocol):
    """Where a node's cdc_raw segments are found: a local directory now, an agent later."""

    def segments(self) -> list[SegmentFile]:
        """Every segment present, oldest first."""

    def index(self, segment: SegmentFile) -> CdcIndex | IndexNotReady:
        """The segment's _cdc.idx as it reads now."""

    def delete(self, segment: SegmentFile) -> None:
        """Remove the segment and its idx (only ever called for fully consumed segments)."""

    def usage_bytes(self) -> int:
        """Bytes the directory holds: what Cassandra counts against cdc_total_space."""


class LocalSegmentStore:
    """A node's cdc_raw directory on this machine's file system."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def segments(self) -> list[SegmentFile]:
        found = []
        for path in self.directory.iterdir():
            match = _SEGMENT.match(path.name)
            if match is not None:
                found.append(SegmentFile(int(match.group(2)), int(match.group(1)), path))
        return sorted(found, key=lambda s: s.segment_id)

    def index(self, segment: SegmentFile) -> CdcIndex | IndexNotReady:
        return read_cdc_index(segment.index_path)

    def delete(self, segment: SegmentFile) -> None:
        # The idx first: a crash between the two leaves a .log without idx, which readers treat
        # as closed (a later segment has an idx) and the next deletion pass removes.
        segment.index_path.unlink(missing_ok=True)
        segment.path.unlink(missing_ok=True)

    def usage_bytes(self) -> int:
        total = 0
        for path in self.directory.iterdir():
            try:
                total += path.stat().st_size
            except FileNotFoundError:  # deleted since the listing
                continue
        return total


class SegmentVanishedError(RuntimeError):
    """A segment the cursor had not finished is gone: its unread changes are lost upstream."""


@dataclass(frozen=True)
class Batch:
    """What one poll found: records in stream order and the position after the last of them."""

    records: list[Entry | ReadError]
    position: Cursor
    # True when the poll stopped because nothing more is readable now (not because of max_records).
    caught_up: bool


def poll(store: SegmentStore, position: Cursor | None, *, max_records: int) -> Batch:
    """Up to MAX_RECORDS records after POSITION (None: from the oldest segment present)."""
    records: list[Entry | ReadError] = []
    segments = store.segments()
    position = _check_not_vanished(segments, position)
    if position is None:
        if not segments:
            return Batch(records, Cursor(0, 0, True), caught_up=True)
        position = Cursor(segments[0].segment_id)
    for index, segment in enumerate(segments):
        if segment.segment_id < position.segment_id or (
            segment.segment_id == position.segment_id and position.done
        ):
            continue
        if segment.segment_id > position.segment_id:
            position = Cursor(segment.segment_id)
        limit, indexed = _read_limit(store, segment, segments[index + 1 :])
        if limit is _NOT_READABLE:
            return Batch(records, position, caught_up=True)
        position = replace(position, unindexed=not indexed)
        start = position.offset or None
        reader = _records(segment, start, limit, position)
        for record in reader:
            if record is _DISCARDED:
                break  # gone with no CDC data in it (see the module docstring)
            records.append(record)
            position = _after(position, record)
            if len(records) >= max_records:
                reader.close()
                # Exactly at the limit: whether more follows is for the next poll to find out.
                return Batch(records, position, caught_up=False)
            if position.done:
                break
        if limit is not None:  # in use: everything readable now is read
            return Batch(records, position, caught_up=True)
        position = replace(position, done=True)
    return Batch(records, position, caught_up=True)


_NOT_READABLE = object()
_DISCARDED = object()  # what _records gives for a segment without idx that Cassandra deleted


def _read_limit(store: SegmentStore, segment: SegmentFile, later: list[SegmentFile]):
    """(the read_segment limit for SEGMENT now, or _NOT_READABLE (see the module docstring);
    whether the segment has an idx of its own)."""
    index = store.index(segment)
    indexed = isinstance(index, CdcIndex)
    if indexed and index.completed:
        return None, True
    if any(isinstance(store.index(successor), CdcIndex) for successor in later):
        return None, indexed  # closed (see the module docstring): final, read to its end
    return (index.offset if indexed else _NOT_READABLE), indexed


def _records(segment: SegmentFile, start: int | None, limit: int | None,
             position: Cursor) -> Iterator:
    try:
        yield from read_segment(segment.path, start=start, limit=limit)
    except FileNotFoundError:
        if position.unindexed:
            _log_discarded(segment.segment_id, position.offset)
            yield _DISCARDED
            return
        raise SegmentVanishedError(
            f"{segment.path} disappeared before it was fully read") from None


def _after(position: Cursor, record: Entry | ReadError) -> Cursor:
    if isinstance(record, Entry):
        return replace(position, offset=record.end)
    if record.resume_at is None:  # nothing after a terminal error is readable: segment over
        return replace(position, done=True)
    return replace(position, offset=record.resume_at)


def _check_not_vanished(segments: list[SegmentFile], position: Cursor | None) -> Cursor | None:
    """POSITION, or past its segment if Cassandra deleted it holding no CDC data. A segment
    deleted under a cursor that had started on it and not finished it otherwise means changes
    were lost upstream (cdc_block_writes false, or a person): say so rather than jump ahead."""
    if position is None or position.done or position.offset == 0:
        return position
    if position.segment_id not in {s.segment_id for s in segments}:
        if position.unindexed:
            _log_discarded(position.segment_id, position.offset)
            return replace(position, done=True)
        raise SegmentVanishedError(
            f"segment {position.segment_id} was deleted before it was fully read "
            f"(the cursor was at offset {position.offset})")
    return position


def _log_discarded(segment_id: int, offset: int) -> None:
    log.info("segment %d, read without an idx of its own up to offset %d, was deleted by "
             "Cassandra: it held no CDC data; reading goes on with the next segment",
             segment_id, offset)


def end_cursor(store: SegmentStore) -> Cursor | None:
    """The cursor after everything readable now (None: nothing there yet), without reading the
    whole history: it starts at the newest segment that has an idx; older ones are closed."""
    indexed = [s for s in store.segments() if isinstance(store.index(s), CdcIndex)]
    if not indexed:
        return None
    cursor: Cursor | None = Cursor(indexed[-1].segment_id)
    while True:
        batch = poll(store, cursor, max_records=10_000)
        cursor = batch.position
        if batch.caught_up:
            return cursor
