"""The cdc_raw cursor on segments built byte for byte (tests/.../segment_writer.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.cassandra.segment import Entry, ReadError
from connectors.cassandra.tail import (
    Cursor,
    LocalSegmentStore,
    SegmentVanishedError,
    poll,
)
from tests.connectors.cassandra.segment_writer import SegmentWriter


class Node:
    """A fake node's cdc_raw: segments written with SegmentWriter, idx files as Cassandra writes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.store = LocalSegmentStore(directory)

    def segment(self, segment_id: int, version: int = 7) -> SegmentWriter:
        return SegmentWriter(segment_id, version=version, capacity=1 << 14)

    def flush(self, writer: SegmentWriter, idx: str | None) -> None:
        (self.directory / writer.file_name()).write_bytes(writer.data())
        index = self.directory / writer.file_name().replace(".log", "_cdc.idx")
        if idx is None:
            index.unlink(missing_ok=True)
        else:
            index.write_text(idx)


def mutations(records) -> list[bytes]:
    return [r.mutation for r in records if isinstance(r, Entry)]


def drain(store, position=None, max_records=1000):
    records = []
    while True:
        batch = poll(store, position, max_records=max_records)
        records += batch.records
        position = batch.position
        if batch.caught_up:
            return records, position


@pytest.fixture
def node(tmp_path) -> Node:
    return Node(tmp_path)


def test_reads_completed_then_in_use_segment_up_to_its_index(node):
    first, second = node.segment(100), node.segment(101)
    for i in range(5):
        first.add(b"first-%02d....." % i)
    node.flush(first, first.close())
    second.add(b"second-synced.")
    synced = second.sync()
    second.add(b"second-unsynced")  # written after the last sync: not durable yet
    node.flush(second, str(synced))

    records, position = drain(node.store)
    assert mutations(records) == [b"first-%02d....." % i for i in range(5)] + [b"second-synced."]
    assert position == Cursor(101, synced)


def test_resuming_from_any_saved_position_replays_exactly_the_rest(node):
    writer = node.segment(7)
    for i in range(12):
        writer.add(b"entry-%02d......" % i)
        if i % 4 == 3:
            writer.sync()
    node.flush(writer, writer.close())
    everything, _ = drain(node.store)

    position, pieces = None, []
    while True:  # three records at a time, as snapshots between micro-batches would cut it
        batch = poll(node.store, position, max_records=3)
        pieces += batch.records
        position = batch.position
        if batch.caught_up:
            break
    assert pieces == everything
    middle = Cursor(7, everything[5].end)
    assert drain(node.store, middle)[0] == everything[6:]


def test_new_syncs_deliver_only_the_new_entries(node):
    writer = node.segment(1)
    writer.add(b"one...........")
    node.flush(writer, str(writer.sync()))
    records, position = drain(node.store)
    assert mutations(records) == [b"one..........."]

    assert drain(node.store, position)[0] == []  # nothing new: nothing handed out again
    writer.add(b"two...........")
    node.flush(writer, str(writer.sync()))
    records, position = drain(node.store, position)
    assert mutations(records) == [b"two..........."]


def test_segment_without_index_waits_until_a_later_one_proves_it_closed(node):
    closed, later = node.segment(5), node.segment(6)
    closed.add(b"closed-entry..")
    closed.sync()
    node.flush(closed, None)  # e.g. the idx caught empty mid-rewrite, or never written
    records, position = drain(node.store)
    assert records == [] and position == Cursor(5)

    later.add(b"later-entry...")
    node.flush(later, str(later.sync()))
    records, position = drain(node.store, position)
    assert mutations(records) == [b"closed-entry..", b"later-entry..."]


def test_entries_after_the_last_sync_of_a_killed_node_are_read_once_it_moved_on(node):
    killed, after_restart = node.segment(10), node.segment(11)
    killed.add(b"synced........")
    offset = killed.sync()
    killed.add(b"after-sync....")  # in the file (page cache survived), idx never updated
    killed.sync()
    node.flush(killed, str(offset))
    records, position = drain(node.store)
    assert mutations(records) == [b"synced........"]

    after_restart.add(b"new-segment...")
    node.flush(after_restart, str(after_restart.sync()))
    records, _ = drain(node.store, position)
    assert mutations(records) == [b"after-sync....", b"new-segment..."]


def test_a_deleted_unfinished_segment_is_an_error_not_a_jump(node):
    gone, next_one = node.segment(20), node.segment(21)
    gone.add(b"a.............")
    gone.add(b"b.............")
    node.flush(gone, str(gone.sync()))
    next_one.add(b"c.............")
    node.flush(next_one, str(next_one.sync()))
    batch = poll(node.store, None, max_records=1)
    (node.directory / gone.file_name()).unlink()
    with pytest.raises(SegmentVanishedError, match="segment 20"):
        poll(node.store, batch.position, max_records=10)


def _poll_deleting_on_read(node, position):
    """poll() from POSITION, its segment deleted as it is opened for reading."""
    import connectors.cassandra.tail as tail

    real = tail.read_segment

    def vanishing(path, **kwargs):
        if path.name.endswith(f"-{position.segment_id}.log"):
            path.unlink()
        return real(path, **kwargs)

    tail.read_segment = vanishing
    try:
        return poll(node.store, position, max_records=10).records
    finally:
        tail.read_segment = real


def test_a_segment_without_idx_that_cassandra_deletes_mid_read_is_passed(node, caplog):
    """A segment with no idx of its own is read because a later one has an idx. Cassandra
    deletes such a segment's cdc_raw link when it discards it holding no CDC data (a flush, a
    restart's replay): gone under the cursor, mid-read or between polls, it loses nothing, and
    the capture goes on with the next segment instead of failing on it at every start."""
    caplog.set_level("INFO", logger="connectors.cassandra.tail")
    for gone_between_polls in (True, False):
        first, second = node.segment(60 + 2 * gone_between_polls), \
            node.segment(61 + 2 * gone_between_polls)
        for payload in (b"a.............", b"b.............", b"c............."):
            first.add(payload)
        first.sync()
        node.flush(first, None)  # no idx: no CDC data in it
        second.add(b"cdc...........")
        node.flush(second, str(second.sync()))
        batch = poll(node.store, None if gone_between_polls else Cursor(first.segment_id),
                     max_records=1)
        assert mutations(batch.records) == [b"a............."]
        if gone_between_polls:
            (node.directory / first.file_name()).unlink()
            records, _ = drain(node.store, batch.position)
        else:  # deleted while the next poll reads it
            records = _poll_deleting_on_read(node, batch.position)
        assert mutations(records) == [b"cdc..........."], gone_between_polls
        (node.directory / second.file_name()).unlink()
        (node.directory / second.file_name().replace(".log", "_cdc.idx")).unlink()
    assert "held no CDC data" in caplog.text


def test_deleting_finished_segments_keeps_the_cursor_valid(node):
    first, second = node.segment(30), node.segment(31)
    first.add(b"x.............")
    node.flush(first, first.close())
    second.add(b"y.............")
    node.flush(second, str(second.sync()))
    _, position = drain(node.store)
    node.store.delete(node.store.segments()[0])
    assert [s.segment_id for s in node.store.segments()] == [31]
    assert drain(node.store, position)[0] == []


def test_a_corrupt_entry_is_a_record_and_reading_goes_on(node):
    writer = node.segment(40)
    writer.add(b"good-1........")
    bad = writer.add(b"will-be-bad...")
    writer.add(b"good-2........")
    idx = writer.close()
    data = bytearray(writer.data())
    data[bad.start + 9] ^= 0xFF  # a byte of the mutation: the entry CRC no longer matches
    (node.directory / writer.file_name()).write_bytes(bytes(data))
    (node.directory / writer.file_name().replace(".log", "_cdc.idx")).write_text(idx)

    records, _ = drain(node.store)
    assert mutations(records) == [b"good-1........", b"good-2........"]
    errors = [r for r in records if isinstance(r, ReadError)]
    assert len(errors) == 1 and errors[0].offset == bad.start


def test_empty_directory_then_a_first_segment(node):
    records, position = drain(node.store)
    assert records == []
    writer = node.segment(50, version=8)
    writer.add(b"v8-entry......")
    node.flush(writer, str(writer.sync()))
    records, _ = drain(node.store, position)
    assert mutations(records) == [b"v8-entry......"]
    assert node.store.usage_bytes() == sum(p.stat().st_size for p in node.directory.iterdir())
