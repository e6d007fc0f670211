"""A real Cassandra node writes CDC the way the capture reader expects (docs: cassandra-cdc.md).

For each commit-log version: writes to a CDC table show up as a hard-linked segment in cdc_raw
named CommitLog-<version>-<id>.log whose header starts with that version; its _cdc.idx offset
grows at each sync; and once a segment is full its idx reads "<offset>\\nCOMPLETED".
"""

from __future__ import annotations

import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import waiting

SEGMENT = re.compile(r"^CommitLog-(\d+)-(\d+)\.log$")
INDEX = re.compile(r"^CommitLog-(\d+)-(\d+)_cdc\.idx$")
SYNC_WAIT = 15.0  # seconds: many commitlog_sync_periods (1 s) on a busy 2-core machine
SEGMENT_BYTES = 1024 * 1024  # commitlog_segment_size of the stack
BIG_ROW = 64 * 1024  # well under max_mutation_size (512 KiB)


@dataclass(frozen=True, order=True)
class IndexState:
    segment_id: int
    offset: int
    completed: bool


def read_index(path: Path, attempts: int = 50) -> IndexState | None:
    """The idx is truncated then rewritten at each sync: an empty read means "read again"."""
    segment_id = int(INDEX.match(path.name).group(2))
    for _ in range(attempts):
        try:
            lines = path.read_text().split("\n")
        except FileNotFoundError:
            return None
        if lines[0].strip():
            completed = len(lines) > 1 and lines[1].strip() == "COMPLETED"
            return IndexState(segment_id, int(lines[0]), completed)
        time.sleep(0.02)
    raise AssertionError(f"{path} stayed empty")


def index_states(cdc_raw: Path) -> dict[int, IndexState]:
    states = {}
    for path in cdc_raw.iterdir():
        if INDEX.match(path.name) and (state := read_index(path)) is not None:
            states[state.segment_id] = state
    return states


def changed_since(cdc_raw: Path, before: dict[int, IndexState]) -> list[IndexState]:
    """Index files that are new or moved since BEFORE, oldest segment first."""
    return sorted(s for s in index_states(cdc_raw).values() if before.get(s.segment_id) != s)


def wait_for(condition, what: str, timeout: float = SYNC_WAIT):
    return waiting.wait_for(condition, what, timeout)


@pytest.fixture(params=[7, 8], ids=["commitlog-v7", "commitlog-v8"])
def cdc_table(request, cassandra_clusters, cassandra_keyspace):
    """(version, node 1's cdc_raw, admin session, prepared insert) on a fresh keyspace."""
    version = request.param
    sess, keyspace = cassandra_keyspace(version)
    sess.execute(f"CREATE TABLE {keyspace}.events (id int PRIMARY KEY, payload text) "
                 "WITH cdc = true")
    insert = sess.prepare(
        f"INSERT INTO {keyspace}.events (id, payload) VALUES (?, ?)"  # noqa: S608 - quoted
    )
    return version, cassandra_clusters[version].cdc_raw_dirs[0], sess, insert


def write(sess, insert, first: int, count: int, size: int) -> None:
    for i in range(first, first + count):
        sess.execute(insert, (i, f"{i:08d}" + "x" * size))


def test_cdc_raw_segment_index_grows_and_completes(cdc_table):
    version, cdc_raw, sess, insert = cdc_table
    before = index_states(cdc_raw)

    # 1. Writes to a CDC table: the segment holding them gets an idx next to its hard link,
    #    and both the file name and the header carry the cluster's commit-log version.
    write(sess, insert, 0, 20, 100)
    first = wait_for(lambda: changed_since(cdc_raw, before), "a _cdc.idx for the new rows")[-1]
    log = cdc_raw / f"CommitLog-{version}-{first.segment_id}.log"
    assert log.exists(), f"no {log.name}; cdc_raw: {sorted(p.name for p in cdc_raw.iterdir())}"
    with log.open("rb") as segment:
        (header_version,) = struct.unpack(">i", segment.read(4))
    assert header_version == version
    names = [p.name for p in cdc_raw.iterdir() if SEGMENT.match(p.name)]
    assert all(SEGMENT.match(n).group(1) == str(version) for n in names), names
    assert first.offset > 0

    # 2. More writes: the durable position (segment, offset) moves on at the next sync.
    write(sess, insert, 100, 20, 100)
    moved = wait_for(lambda: [s for s in index_states(cdc_raw).values() if s > first],
                     f"an idx beyond segment {first.segment_id} offset {first.offset}")
    assert max(moved) > first

    # 3. Over two segments of data: a segment fills, is closed, and its idx says COMPLETED.
    write(sess, insert, 1000, 2 * SEGMENT_BYTES // BIG_ROW + 4, BIG_ROW)
    completed = wait_for(
        lambda: [s for s in index_states(cdc_raw).values()
                 if s.completed and s.segment_id >= first.segment_id],
        f"a COMPLETED idx for segment {first.segment_id} or a later one",
    )
    done = min(completed)
    text = (cdc_raw / f"CommitLog-{version}-{done.segment_id}_cdc.idx").read_text()
    assert text == f"{done.offset}\nCOMPLETED", repr(text)
    assert 0 < done.offset <= SEGMENT_BYTES
