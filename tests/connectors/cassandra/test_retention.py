"""Deleting consumed cdc_raw segments (docs/adr/0004), against Bytewax's real recovery store.

The property that matters: whatever moment the process dies at, a restart from the recovery
store finds every segment it resumes into, and nothing is lost. Segments are written byte for
byte (segment_writer.py); their entries do not decode, so each becomes an error record with
its position: enough to see every entry arrive.
"""

from __future__ import annotations

import pickle
import sqlite3
from datetime import timedelta

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, run_main
from prometheus_client import REGISTRY

from connectors.cassandra.retention import (
    RecoveryStoreError,
    RetentionSettings,
    SegmentJanitor,
    _resume_epoch,
    deletable,
    replay_floor,
)
from connectors.cassandra.source import CdcSource, NodeSpec
from connectors.cassandra.tail import Cursor, LocalSegmentStore, SegmentFile
from tests.connectors.cassandra.crashing_sink import CrashingSink
from tests.connectors.cassandra.golden_load import schemas
from tests.connectors.cassandra.segment_writer import SegmentWriter

SEGMENTS = 8
ENTRIES = 5  # per segment
STEP = "capture.cdc"


WRITTEN: set[tuple[int, int]] = set()  # (segment id, end offset) of every entry written


@pytest.fixture
def node(tmp_path) -> NodeSpec:
    cdc_raw = tmp_path / "cdc_raw"
    cdc_raw.mkdir()
    for segment_id in range(100, 100 + SEGMENTS):
        writer = SegmentWriter(segment_id, capacity=1 << 12)
        for i in range(ENTRIES):
            WRITTEN.add((segment_id, writer.add(b"seg%03d-entry%02d" % (segment_id, i)).end))
        index = writer.close()  # before data(): closing writes the last section's marker
        (cdc_raw / writer.file_name()).write_bytes(writer.data())
        (cdc_raw / writer.file_name().replace(".log", "_cdc.idx")).write_text(index)
    assert len(WRITTEN) == SEGMENTS * ENTRIES
    return NodeSpec("n1", cdc_raw)


@pytest.fixture
def recovery(tmp_path):
    directory = tmp_path / "recovery"
    directory.mkdir()
    init_db_dir(directory, 2)
    return directory


def flow_of(node, recovery, sink, *, interval: float = 0.0) -> Dataflow:
    flow = Dataflow("capture")
    stream = op.input("cdc", flow, CdcSource(
        [node], lambda: schemas(7), max_records=3, until_caught_up=True,
        retention=RetentionSettings(recovery, interval_seconds=interval)))
    op.output("out", stream, sink)
    return flow


def positions(items) -> list[tuple[int, int]]:
    return [(i.position.segment_id, i.position.offset) for i in items]


def present(node) -> list[int]:
    return [s.segment_id for s in LocalSegmentStore(node.cdc_raw).segments()]


def test_a_finished_run_deletes_exactly_what_no_restart_can_need(node, recovery):
    out: list = []
    deleted_before = _sample("cdc_raw_segments_deleted_total", node.name)
    run_main(flow_of(node, recovery, TestingSink(out)), epoch_interval=timedelta(0),
             recovery_config=RecoveryConfig(str(recovery)))
    assert set(positions(out)) == WRITTEN
    floor = replay_floor(recovery, STEP, node.name)
    assert floor is not None and floor.segment_id > 100
    remaining = present(node)
    deleted = _sample("cdc_raw_segments_deleted_total", node.name) - deleted_before
    assert deleted == SEGMENTS - len(remaining) > 0
    assert remaining == list(range(min(remaining), 100 + SEGMENTS))  # the oldest went first
    assert min(remaining) <= floor.segment_id  # none that a restart resumes into
    # Deletion lags the store by a pass: the next one takes what the final epoch released.
    janitor = SegmentJanitor(node.name, LocalSegmentStore(node.cdc_raw), STEP,
                             RetentionSettings(recovery, interval_seconds=0))
    janitor.tick(floor)
    assert present(node) == [i for i in remaining
                             if i > floor.segment_id or (i == floor.segment_id and not floor.done)]


@pytest.mark.parametrize("crash_after", [4, 13, 22, 31])
def test_a_crash_at_any_moment_resumes_into_segments_still_present(
        node, recovery, crash_after):
    first_run: list = []

    config = RecoveryConfig(str(recovery))
    with pytest.raises(Exception, match="error writing output batch"):
        run_main(flow_of(node, recovery, CrashingSink(first_run, crash_after)),
                 epoch_interval=timedelta(0), recovery_config=config)
    deleted_before_restart = 100 + SEGMENTS - len(present(node))
    second_run: list = []
    run_main(flow_of(node, recovery, TestingSink(second_run)), epoch_interval=timedelta(0),
             recovery_config=config)  # a SegmentVanishedError would fail it here
    assert set(positions(first_run + second_run)) == WRITTEN  # nothing lost
    if crash_after > 2 * ENTRIES:
        assert deleted_before_restart > 0, "segments were deleted during the first run"


def test_resume_epoch_is_computed_as_bytewax_does():
    # The cases of Bytewax 0.21.1's own tests (recovery.rs: resume_from_*).
    assert _resume_epoch({1: (3, 11)}, [(1, 0, 13), (1, 1, 12), (1, 2, 13)]) == 12
    assert _resume_epoch({1: (3, 11)}, [(1, 0, 13), (1, 2, 13)]) == 11  # worker 1: default
    assert _resume_epoch({0: (1, 1), 1: (2, 5)}, [(0, 0, 9), (1, 0, 7), (1, 1, 6)]) == 6
    assert _resume_epoch({}, []) is None


def test_only_segments_wholly_before_the_floor_are_deletable(tmp_path):
    segments = [SegmentFile(i, 7, tmp_path / f"CommitLog-7-{i}.log") for i in (1, 2, 3)]
    ids = lambda floor: [s.segment_id for s in deletable(segments, floor)]  # noqa: E731
    assert ids(None) == []
    assert ids(Cursor(2, 0)) == [1]
    assert ids(Cursor(2, 500)) == [1]
    assert ids(Cursor(2, 500, done=True)) == [1, 2]
    assert ids(Cursor(9)) == [1, 2, 3]


def test_the_oldest_kept_snapshot_before_the_resume_epoch_is_the_floor(recovery):
    _fake_store(recovery, snaps=[(3, Cursor(101, 40)), (5, Cursor(104, 8)),
                                 (9, Cursor(107, 2))], resume=7)
    assert replay_floor(recovery, STEP, "n1") == Cursor(101, 40)  # epoch 9 >= 7 is not used


def test_a_store_missing_a_partition_refuses_and_deletes_nothing(node, recovery, caplog):
    _fake_store(recovery, snaps=[(3, Cursor(105))], resume=7)
    (recovery / "part-1.sqlite3").unlink()
    with pytest.raises(RecoveryStoreError, match="incomplete"):
        replay_floor(recovery, STEP, node.name)
    janitor = SegmentJanitor(node.name, LocalSegmentStore(node.cdc_raw), STEP,
                             RetentionSettings(recovery, interval_seconds=0))
    assert janitor.tick(Cursor(200)) == []
    assert len(present(node)) == SEGMENTS
    assert "not deleting consumed segments" in caplog.text and "incomplete" in caplog.text


def test_a_snapshot_that_is_not_a_cursor_refuses(recovery):
    _fake_store(recovery, snaps=[(3, {"segment": 105})], resume=7)
    with pytest.raises(RecoveryStoreError, match="not a Cursor"):
        replay_floor(recovery, STEP, "n1")


def test_without_a_recovery_directory_nothing_is_ever_deleted(node, caplog):
    store = LocalSegmentStore(node.cdc_raw)
    janitor = SegmentJanitor(node.name, store, STEP, RetentionSettings(
        None, capacity_bytes=store.usage_bytes(), interval_seconds=0))
    assert janitor.tick(Cursor(200)) == []
    assert len(present(node)) == SEGMENTS
    assert "never deleted" in caplog.text
    assert "Cassandra stops CDC writes when it is full" in caplog.text  # usage >= 80%
    assert _sample("cdc_raw_usage_bytes", node.name) == store.usage_bytes()


def test_the_live_cursor_also_bounds_deletion(node, recovery):
    _fake_store(recovery, snaps=[(3, Cursor(106))], resume=7)
    janitor = SegmentJanitor(node.name, LocalSegmentStore(node.cdc_raw), STEP,
                             RetentionSettings(recovery, interval_seconds=0))
    assert [s.segment_id for s in janitor.tick(Cursor(102, 30))] == [100, 101]
    assert [s.segment_id for s in janitor.tick(Cursor(107))] == [102, 103, 104, 105]


def _fake_store(recovery, *, snaps, resume: int) -> None:
    """A store as Bytewax writes it: one execution of one worker that resumed at RESUME."""
    with sqlite3.connect(recovery / "part-0.sqlite3") as db:
        db.execute("INSERT INTO exs (ex_num, worker_count, resume_epoch) VALUES (0, 1, ?)",
                   (resume,))
        for epoch, state in snaps:
            db.execute("INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) "
                       "VALUES (?, 'n1', ?, ?)", (STEP, epoch, pickle.dumps(state)))


def _sample(name: str, node: str) -> float:
    value = REGISTRY.get_sample_value(name, {"node": node})
    return 0.0 if value is None else value
