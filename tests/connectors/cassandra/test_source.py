"""The capture as a Bytewax input, over the golden segments of real nodes (no node needed)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, run_main

from connectors.cassandra.events import ChangeEvent
from connectors.cassandra.source import CdcPartition, CdcSource, NodeSpec
from connectors.cassandra.tail import LocalSegmentStore
from tests.connectors.cassandra.crashing_sink import CrashingSink
from tests.connectors.cassandra.golden_load import schemas, unpack

GOLDEN_EVENTS = 13  # what golden.py's DML writes to CDC tables (test_golden_segments.py)


@pytest.fixture
def nodes(tmp_path) -> list[NodeSpec]:
    """Two nodes: the v7 golden cdc_raw and the v8 one, as two partitions of one source."""
    specs = []
    for version in (7, 8):
        cdc_raw = tmp_path / f"node-v{version}"
        cdc_raw.mkdir()
        unpack(version, cdc_raw)
        specs.append(NodeSpec(f"node-v{version}", cdc_raw))
    return specs


def schemas_for(nodes):
    return lambda: schemas(7, 8)  # both golden keyspaces: one source serves both nodes


def flow_of(nodes, out, **kwargs) -> Dataflow:
    flow = Dataflow("capture")
    stream = op.input("cdc", flow, CdcSource(nodes, schemas_for(nodes), **kwargs))
    op.output("out", stream, TestingSink(out))
    return flow


def key(item) -> tuple:
    return (item.node, item.position, item.seq)


def test_every_change_of_every_node_arrives_once(nodes):
    out: list = []
    run_main(flow_of(nodes, out, max_records=7, until_caught_up=True))
    events = [i for i in out if isinstance(i, ChangeEvent)]
    assert out == events  # no error records: every entry of the golden segments decodes
    by_node = {n.name: [e for e in events if e.node == n.name] for n in nodes}
    assert {name: len(evs) for name, evs in by_node.items()} == {
        "node-v7": GOLDEN_EVENTS, "node-v8": GOLDEN_EVENTS}
    for evs in by_node.values():  # each node's stream in its own order
        assert [key(e) for e in evs] == sorted(key(e) for e in evs)
    assert len({key(e) for e in events}) == len(events)


def test_a_partition_rebuilt_from_its_snapshot_continues_exactly(nodes):
    node = nodes[0]

    def build(cursor):
        return CdcPartition(node.name, LocalSegmentStore(node.cdc_raw), schemas_for(nodes)(),
                            cursor, max_records=5, idle_wait=timedelta(0), until_caught_up=True)

    def drain(partition, limit=None):
        items = []
        while limit is None or len(items) < limit:
            try:
                items += partition.next_batch()
            except StopIteration:
                break
        return items

    everything = drain(build(None))
    first = build(None)
    head = drain(first, limit=4)
    resumed = drain(build(first.snapshot()))
    assert [key(i) for i in head + resumed] == [key(i) for i in everything]


def test_after_a_crash_recovery_resumes_without_losing_a_change(nodes, tmp_path):
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    config = RecoveryConfig(str(recovery))
    first_run: list = []

    flow = Dataflow("capture")
    stream = op.input("cdc", flow, CdcSource(nodes, schemas_for(nodes), max_records=3,
                                             until_caught_up=True))
    op.output("out", stream, CrashingSink(first_run, 10))
    with pytest.raises(Exception, match="error writing output batch"):  # Bytewax wraps it
        run_main(flow, epoch_interval=timedelta(0), recovery_config=config)

    second_run: list = []
    run_main(flow_of(nodes, second_run, max_records=3, until_caught_up=True),
             epoch_interval=timedelta(0), recovery_config=config)
    assert second_run, "the second run resumed from the snapshot and had work left"
    delivered = {key(i) for i in first_run + second_run}
    assert len(delivered) == 2 * GOLDEN_EVENTS  # nothing lost; replays are at-least-once
    assert len(second_run) < 2 * GOLDEN_EVENTS  # and it did resume, not start over


def test_only_reachable_nodes_are_listed(tmp_path):
    present = tmp_path / "here"
    present.mkdir()
    source = CdcSource([NodeSpec("here", present), NodeSpec("elsewhere", tmp_path / "nope")],
                       lambda: None)
    assert source.list_parts() == ["here"]
    with pytest.raises(ValueError, match="unique"):
        CdcSource([NodeSpec("a", present), NodeSpec("a", Path("/x"))], lambda: None)


def test_a_rate_limit_spaces_batches(nodes):
    from datetime import UTC, datetime

    node = nodes[0]
    partition = CdcPartition(node.name, LocalSegmentStore(node.cdc_raw), schemas_for(nodes)(),
                             None, max_records=4, idle_wait=timedelta(0),
                             max_entries_per_second=2.0)
    before = datetime.now(UTC)
    partition.next_batch()
    # 4 entries at 2 per second: the next batch is not due for 2 s.
    assert partition.next_awake() >= before + timedelta(seconds=2)
    unlimited = CdcPartition(node.name, LocalSegmentStore(node.cdc_raw), schemas_for(nodes)(),
                             None, max_records=4, idle_wait=timedelta(0))
    unlimited.next_batch()
    assert unlimited.next_awake() is None


def test_a_partition_reports_its_polls_to_health_until_closed(nodes, monkeypatch):
    """Not ready until its first poll; ready after; gone from the report once closed (a
    finished partition must not turn the process unready as "stalled")."""
    from connectors.health import Health

    health = Health()
    monkeypatch.setattr("connectors.cassandra.source.HEALTH", health)
    node = nodes[0]
    partition = CdcPartition(node.name, LocalSegmentStore(node.cdc_raw), schemas_for(nodes)(),
                             None, max_records=5, idle_wait=timedelta(0), until_caught_up=True)
    name = f"capture {node.name}"
    assert health.report()[2]["checks"][name]["state"] == "trouble"
    partition.next_batch()
    assert health.report()[:2] == (True, True)
    partition.close()
    assert name not in health.report()[2]["checks"]
