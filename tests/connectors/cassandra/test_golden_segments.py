"""Whole segments real v7 and v8 nodes wrote (data/golden-v*, see golden.py), read without a node.

Each expectation comes from the DML in golden.py (every statement carries its timestamp), not
from the decoder: the framing, the cursor and the decoder together must turn the node's bytes
back into exactly those changes, in order, and nothing else.
"""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from cassandra.util import Date

from connectors.cassandra.events import ChangeKind
from connectors.cassandra.segment import Entry
from tests.connectors.cassandra.golden_load import decode_all, read_all, unpack

UPSERT, ROW_DELETE = ChangeKind.UPSERT, ChangeKind.ROW_DELETE
PARTITION_DELETE, RANGE_DELETE = ChangeKind.PARTITION_DELETE, ChangeKind.RANGE_DELETE


@pytest.fixture(params=[7, 8], ids=["commitlog-v7", "commitlog-v8"])
def golden(request, tmp_path):
    version = request.param
    records = read_all(unpack(version, tmp_path))
    return version, records, decode_all(version, records)


def test_every_entry_frames_and_decodes_without_error(golden):
    version, records, decoded = golden
    assert records and all(isinstance(r, Entry) and r.version == version for r in records)
    assert [e for d in decoded for e in d.errors] == []
    assert [c for d in decoded for c in d.counters] == []


def test_the_workload_comes_back_in_order_with_its_timestamps(golden):
    _, _, decoded = golden
    events = [e for d in decoded for e in d.events]
    assert [(e.table, e.kind, _ts(e)) for e in events] == [
        ("patients", UPSERT, 1000), ("patients", UPSERT, 2000), ("patients", UPSERT, 3000),
        ("patients", UPSERT, 4000), ("patients", UPSERT, 5000), ("patients", UPSERT, 6000),
        # DELETE of a row whose table has no clustering is a partition deletion.
        ("patients", PARTITION_DELETE, 7000),
        ("visits", UPSERT, 8000), ("visits", UPSERT, 8000),  # the static row, then the row
        ("visits", UPSERT, 9000), ("visits", RANGE_DELETE, 10000),
        ("visits", PARTITION_DELETE, 11000),
        ("patients", UPSERT, 12000),  # the batch's cdc=false table is parsed and dropped
    ]
    insert, ttl_update, append, overwrite, cell_delete = events[:5]

    assert insert.partition_key == {"id": 1} and insert.liveness.timestamp == 1000
    assert insert.cells["name"].value == "Ana Lima"
    assert insert.cells["born"].value == Date(datetime.date(1980, 2, 29))
    assert insert.cells["weight"].value == 61.5
    # A collection written by INSERT replaces what was there: a tombstone at ts - 1.
    assert insert.cells["tags"].deletion.marked_for_delete_at == 999
    assert [el.path for el in insert.cells["tags"].elements] == ["a", "b"]
    assert [el.value for el in insert.cells["notes"].elements] == ["first"]
    assert [(el.path, el.value) for el in insert.cells["attrs"].elements] == [("x", 1)]

    assert ttl_update.liveness is None  # UPDATE writes no primary-key liveness
    weight = ttl_update.cells["weight"]
    assert (weight.value, weight.timestamp, weight.ttl) == (62.0, 2000, 3600)
    assert append.cells["tags"].deletion is None
    assert [el.path for el in append.cells["tags"].elements] == ["c"]
    assert [el.value for el in append.cells["notes"].elements] == ["second"]
    assert overwrite.cells["attrs"].deletion.marked_for_delete_at == 3999
    assert [(el.path, el.value) for el in overwrite.cells["attrs"].elements] == [("y", 2)]
    assert cell_delete.cells["name"].deleted and cell_delete.cells["name"].value is None

    static, row, _, range_delete, partition_delete, batch = events[7:]
    assert static.is_static and static.cells["clinic"].value == "North"
    assert row.clustering == {"at": datetime.datetime(2024, 1, 1, 10, 0)}
    assert row.cells["cost"].value == Decimal("12.50")
    # at >= 2024-01-15 on a DESC clustering: from the partition's start to that bound, inclusive.
    assert range_delete.partition_key == {"patient": 1}
    assert range_delete.range_start.clustering == {} and range_delete.range_start.inclusive
    assert range_delete.range_end.clustering == {"at": datetime.datetime(2024, 1, 15)}
    assert range_delete.range_end.inclusive
    assert partition_delete.partition_key == {"patient": 2}
    assert batch.partition_key == {"id": 3} and batch.cells["name"].value == "Cy"


def test_positions_are_the_entries_own_and_increase(golden):
    _, records, decoded = golden
    ends = [r.end for r in records]
    assert ends == sorted(ends) and len(set(ends)) == len(ends)
    assert [e.position.offset for d in decoded for e in d.events] == sorted(
        e.position.offset for d in decoded for e in d.events)


def _ts(event) -> int:
    if event.deletion is not None and event.kind is not UPSERT:
        return event.deletion.marked_for_delete_at
    if event.liveness is not None:
        return event.liveness.timestamp
    return max(c.timestamp if hasattr(c, "timestamp") else max(el.timestamp for el in c.elements)
               for c in event.cells.values())
