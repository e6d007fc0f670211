"""Damaged copies of REAL cdc_raw segments (commit-log v7 and v8): nothing is lost silently.

A workload of this module's keyspace is written in bursts (so that it spans several sync
sections), the segment holding it is padded until its _cdc.idx says COMPLETED, and copied into
a temporary directory (cdc_raw itself is only read). Each test damages a copy (a byte of an
entry, of a size field, of a sync marker, the file truncated, a mutation rewritten with a valid
CRC) and checks against the clean copy:

- the damage is reported: a ReadError (framing) or an UndecodableUpdate (decoding) naming the
  segment and the offset, with a reason, and covering the damaged byte;
- every entry the damage did not touch reads back identical and decodes to the same events
  (same digests);
- the count adds up: clean entries = entries read from the damaged copy + entries lying in the
  ranges the error records cover (and no entry appears that the clean copy does not have).

Commit-log compression and encryption are node-level settings; the stack's nodes write plain
segments, so compressed-section damage is covered by the offline tests only (test_segment.py).
"""

from __future__ import annotations

import shutil
import struct
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from cassandra.metadata import protect_name
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.cassandra.descriptor import checksum_int
from connectors.cassandra.events import Position
from connectors.cassandra.segment import Entry, ErrorKind, ReadError, read_segment, scan_sections
from tests.connectors.cassandra.cdc_capture import CdcCapture, table_id

BURSTS = 4
PER_BURST = 15


@dataclass
class CleanSegment:
    capture: CdcCapture
    path: Path  # the pristine copy
    segment_id: int
    table_id: uuid.UUID
    entries: list[Entry]  # every entry of the segment, in order
    ours: list[Entry]  # the entries holding an update of our table
    digests: dict[int, list[bytes]]  # our entry's start -> digests of its events
    sections: list  # SyncSections


@pytest.fixture(scope="module", params=[7, 8], ids=["commitlog-v7", "commitlog-v8"])
def clean(request, cassandra_clusters, creds, tmp_path_factory) -> CleanSegment:
    from devstack.cassandra import connect

    version = request.param
    info = cassandra_clusters[version]
    cluster, sess = connect(version, "admin", password=creds("cassandra", "admin").password)
    keyspace = protect_name(f"test_{uuid.uuid4().hex[:16]}")
    sess.execute(f"CREATE KEYSPACE {keyspace} WITH replication = {{'class': "
                 f"'NetworkTopologyStrategy', 'datacenter1': {len(info.contact_points)}}}")
    try:
        sess.execute(f"CREATE TABLE {keyspace}.t (id int, ck int, v text, tags set<text>, "
                     "PRIMARY KEY (id, ck)) WITH cdc = true")
        capture = CdcCapture(sess, keyspace, info.cdc_raw_dirs[0])
        insert = sess.prepare(f"INSERT INTO {keyspace}.t (id, ck, v, tags) VALUES (?, ?, ?, ?)")
        update = sess.prepare(f"UPDATE {keyspace}.t SET tags = tags + ? WHERE id = ? AND ck = ?")
        delete = sess.prepare(f"DELETE FROM {keyspace}.t WHERE id = ? AND ck = ?")

        def workload():
            for burst in range(BURSTS):
                for i in range(PER_BURST):
                    n = burst * PER_BURST + i
                    sess.execute(insert, (n % 7, n, f"value-{n:04d}" * (1 + n % 5), {f"t{n}"}))
                    if n % 3 == 0:
                        sess.execute(update, ({"extra"}, n % 7, n))
                    if n % 5 == 0:
                        sess.execute(delete, (n % 7, n - 1))
                time.sleep(1.3)  # the next burst lands in a later sync section

        result = capture.run(workload, ["t"])
        assert result.read_errors == [] and result.errors == []
        by_segment: dict[int, int] = {}
        for e, d in zip(result.entries, result.decoded, strict=True):
            if not d.events:
                continue  # e.g. the schema mutation of CREATE TABLE, synced after the start
            by_segment[e.segment_id] = by_segment.get(e.segment_id, 0) + 1
        segment_id = max(by_segment, key=by_segment.get)
        segment = capture.wait_completed(segment_id)
        path = tmp_path_factory.mktemp(f"v{version}") / segment.path.name
        shutil.copyfile(segment.path, path)  # cdc_raw is only read
        records = list(read_segment(path))
        assert [r for r in records if isinstance(r, ReadError)] == []
        entries = [r for r in records if isinstance(r, Entry)]
        tid = table_id(sess, keyspace, "t")
        # The id also appears in the schema mutation of CREATE TABLE (system_schema: skipped,
        # no events): ours are the entries that decode into events.
        candidates = [e for e in entries if tid.bytes in e.mutation]
        decoded = capture.decode(candidates)
        assert [d.errors for d in decoded if d.errors] == []
        digests = {e.start: [ev.digest for ev in d.events]
                   for e, d in zip(candidates, decoded, strict=True) if d.events}
        ours = [e for e in candidates if e.start in digests]
        assert len(ours) == by_segment[segment_id]
        sections = [s for s in scan_sections(path) if not isinstance(s, ReadError)]
        yield CleanSegment(capture, path, segment_id, tid, entries, ours, digests, sections)
    finally:
        sess.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
        cluster.shutdown()


def _damaged(clean: CleanSegment, tmp_path: Path, edit) -> Path:
    path = tmp_path / clean.path.name  # same name: the reader checks name against header
    data = bytearray(clean.path.read_bytes())
    data = edit(data) or data
    path.write_bytes(bytes(data))
    return path


def _middle_section(clean: CleanSegment):
    """A section, not the first of the file, that holds at least two of our entries."""
    for section in clean.sections[1:]:
        inside = [e for e in clean.ours if section.start <= e.start < section.end]
        if len(inside) >= 2:
            return section, inside
    pytest.fail(f"no section after the first holds two of our entries: {clean.sections}")


def _check(clean: CleanSegment, path: Path, damaged_at: list[int], *,
           rewritten: dict[int, bytes] | None = None) -> list:
    """The invariants of the module docstring; returns the error records (framing and decoding)."""
    records = list(read_segment(path))
    errors = [r for r in records if isinstance(r, ReadError)]
    entries = [r for r in records if isinstance(r, Entry)]
    rewritten = rewritten or {}

    for error in errors:
        assert error.segment_id == clean.segment_id and error.segment_path == str(path)
        assert error.reason and isinstance(error.kind, ErrorKind)
    # A terminal record (resume_at None) stands for everything after it in the segment.
    spans = [(e.offset, float("inf") if e.resume_at is None else e.resume_at) for e in errors]
    for at in damaged_at:  # the damage itself is reported (framing) or decoded into an error
        assert any(lo <= at < hi for lo, hi in spans), (at, errors)

    clean_by_start = {e.start: e for e in clean.entries}
    for e in entries:  # nothing that was not there (a rewritten mutation is itself)
        original = clean_by_start.get(e.start)
        assert original is not None and original.end == e.end, e
        assert e.mutation == rewritten.get(e.start, original.mutation)
    read = {e.start for e in entries}
    covered = [e for e in clean.entries if e.start not in read
               and any(lo <= e.start and e.end <= hi for lo, hi in spans)]
    missing = [e for e in clean.entries if e.start not in read and e not in covered]
    assert missing == [], f"entries lost without an error record: {missing}"
    assert len(clean.entries) == len(entries) + len(covered)

    # Untouched entries of ours decode to the very same events.
    ours = [e for e in entries if clean.table_id.bytes in e.mutation or e.start in rewritten]
    decoded = clean.capture.decode(ours)
    undecodable = []
    for entry, d in zip(ours, decoded, strict=True):
        if entry.start in rewritten:
            undecodable += d.errors
            continue
        assert d.errors == []
        assert [ev.digest for ev in d.events] == clean.digests.get(entry.start, [])
    assert {e.start for e in ours} >= set(clean.digests) - {e.start for e in covered}
    return errors + undecodable


def test_clean_copy_reads_like_cdc_raw(clean):
    # The copy holds every entry the capture saw in this segment, and more than one section.
    assert len(clean.ours) >= BURSTS and len(clean.sections) >= 3


def test_flipped_byte_inside_an_entry_costs_that_entry_only(clean, tmp_path):
    section, inside = _middle_section(clean)
    victim = inside[1]
    at = victim.start + 8 + (victim.end - victim.start - 12) // 2  # mid-mutation

    def edit(data):
        data[at] ^= 0x40
    errors = _check(clean, _damaged(clean, tmp_path, edit), [at])
    assert [(e.kind, e.offset, e.resume_at) for e in errors] == [
        (ErrorKind.ENTRY_CRC, victim.start, victim.end)]


def test_flipped_size_field_costs_the_rest_of_its_section(clean, tmp_path):
    section, inside = _middle_section(clean)
    victim = inside[0]

    def edit(data):
        data[victim.start + 2] ^= 0x01
    errors = _check(clean, _damaged(clean, tmp_path, edit), [victim.start + 2])
    assert errors[0].kind == ErrorKind.ENTRY_SIZE_CRC and errors[0].offset == victim.start
    assert errors[0].resume_at == section.end


@pytest.mark.parametrize("field", ["crc", "next_backwards", "next_short", "next_long"])
def test_damaged_sync_marker(clean, tmp_path, field):
    section, inside = _middle_section(clean)
    marker = section.offset

    def edit(data):
        (next_pos,) = struct.unpack_from(">i", data, marker)
        if field == "crc":
            data[marker + 5] ^= 0x10
        elif field == "next_backwards":
            struct.pack_into(">i", data, marker, marker)
        elif field == "next_short":  # inside the section's last entry
            struct.pack_into(">i", data, marker, next_pos - 5)
        else:  # past the real next marker
            struct.pack_into(">i", data, marker, next_pos + 24)
    damaged = marker + 5 if field == "crc" else marker
    errors = _check(clean, _damaged(clean, tmp_path, edit), [damaged])
    assert errors[0].offset == marker
    assert errors[0].kind in (ErrorKind.MARKER_CRC, ErrorKind.MARKER_POSITION)


def test_truncated_segment(clean, tmp_path):
    section, inside = _middle_section(clean)
    victim = inside[1]
    cut = victim.start + (victim.end - victim.start) // 2

    def edit(data):
        return data[:cut]
    errors = _check(clean, _damaged(clean, tmp_path, edit), [cut - 1])
    assert errors[-1].resume_at is None  # terminal: nothing after it can be read
    assert errors[-1].offset <= victim.start


def _rewrite(data: bytearray, entry: Entry, mutation: bytes) -> None:
    """Put MUTATION (same length) into ENTRY's frame, with a valid CRC."""
    size = len(mutation)
    assert size == entry.end - entry.start - 12
    data[entry.start + 8:entry.start + 8 + size] = mutation
    struct.pack_into(">I", data, entry.start + 8 + size,
                     zlib.crc32(mutation, checksum_int(0, size)))


@pytest.mark.parametrize("how", ["unknown_table", "zero_updates"])
def test_mutation_damaged_behind_a_valid_crc_becomes_an_undecodable_update(clean, tmp_path,
                                                                            how):
    section, inside = _middle_section(clean)
    victim = inside[1]
    if how == "unknown_table":
        mutation = victim.mutation.replace(clean.table_id.bytes, uuid.uuid4().bytes)
    else:
        mutation = b"\x00" + victim.mutation[1:]

    def edit(data):
        _rewrite(data, victim, mutation)
    # The frame is valid: no framing error; the decoder must report it (checked below).
    errors = _check(clean, _damaged(clean, tmp_path, edit), [],
                    rewritten={victim.start: mutation})
    assert len(errors) == 1
    error = errors[0]
    assert error.position == Position(clean.segment_id, victim.end)
    assert error.raw == mutation and error.reason
    assert ("unknown table id" if how == "unknown_table" else "0 partition updates") \
        in error.reason


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_byte_flips_are_reported_and_cost_nothing_else(clean, tmp_path_factory, data):
    """Any single damaged byte from the first sync marker to the end marker after our entries:
    the invariants of the module docstring hold (where it lands decides which error)."""
    first = clean.sections[0].offset
    last = max(e.end for e in clean.ours)
    end_marker = min((s.offset for s in clean.sections if s.offset >= last), default=last)
    at = data.draw(st.integers(first, end_marker + 7), label="offset")
    mask = data.draw(st.integers(1, 255), label="xor mask")

    def edit(raw):
        raw[at] ^= mask
    _check(clean, _damaged(clean, tmp_path_factory.mktemp("flip"), edit), [at])
