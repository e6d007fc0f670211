"""RangeTombstones: a sink partition's recent range deletions drop the loaded rows they cover
that arrive after them, and nothing else (no server: a real layout of a real schema)."""

from __future__ import annotations

import datetime
import uuid

import pytest

from connectors.cassandra.events import Position
from connectors.cassandra.schema import build_schemas
from connectors.postgres._layout import build_layout
from connectors.range_tombstones import DROPPED, RangeTombstones
from operators.row_ops import INITIAL_LOAD, ClusteringBound, RangeDelete, RowUpsert, Source
from tests.connectors.cassandra.test_schema import T1, rows
from tests.connectors.postgres.conftest import KS, TABLES
from tests.manual_clock import ManualClock

# shop.orders: partition (customer uuid, region text), clustering (day date DESC, seq int ASC),
# static note.
LAYOUT = build_layout(build_schemas(rows())[0][T1])
CAPTURED = Source("n1", Position(3, 40))
ANA, BEN = uuid.UUID(int=1), uuid.UUID(int=2)
MONDAY, TUESDAY = datetime.date(2026, 11, 23), datetime.date(2026, 11, 24)


def guard(**kw) -> tuple[RangeTombstones, ManualClock]:
    clock = ManualClock(1000.0)
    return RangeTombstones("test", lambda _ks, _t: LAYOUT, clock=clock, **kw), clock


def loaded(customer, day, seq, version, source=INITIAL_LOAD) -> RowUpsert:
    return RowUpsert("shop", "orders", {"customer": customer, "region": "eu", "day": day,
                                        "seq": seq}, {"total": 1}, version, source)


def loaded_static(customer, version) -> RowUpsert:
    return RowUpsert("shop", "orders", {"customer": customer, "region": "eu"}, {"note": "n"},
                     version, INITIAL_LOAD, static=True)


def deletion(customer, version, start=None, end=None, include_static=False) -> RangeDelete:
    return RangeDelete("shop", "orders", {"customer": customer, "region": "eu"},
                       ClusteringBound(start or {}, True), ClusteringBound(end or {}, True),
                       version, CAPTURED, include_static)


def dropped() -> float:
    return DROPPED.labels("test", "shop.orders")._value.get()  # noqa: SLF001 - the counter


def test_a_partition_deletion_drops_the_older_loaded_rows_of_its_partition_only() -> None:
    tombstones, _ = guard()
    partition = deletion(ANA, 100, include_static=True)
    assert tombstones.screen([partition]) == [partition]
    before = dropped()
    kept = [loaded(ANA, MONDAY, 1, 101),  # written again after the deletion
            loaded(BEN, MONDAY, 1, 50),  # another partition
            loaded(ANA, MONDAY, 2, 50, source=CAPTURED)]  # a change's image: never screened
    assert tombstones.screen([loaded(ANA, MONDAY, 1, 100), loaded_static(ANA, 99), *kept]) == kept
    assert dropped() == before + 2


def test_a_range_deletion_drops_the_loaded_rows_inside_its_range() -> None:
    tombstones, _ = guard()
    tombstones.screen([deletion(BEN, 100, {"day": MONDAY, "seq": 2}, {"day": MONDAY, "seq": 4})])
    inside = [loaded(BEN, MONDAY, seq, 90) for seq in (2, 3, 4)]
    outside = [loaded(BEN, MONDAY, 1, 90), loaded(BEN, MONDAY, 5, 90),
               loaded(BEN, TUESDAY, 3, 90), loaded_static(BEN, 90)]  # no include_static
    assert tombstones.screen(inside + outside) == outside


def test_only_rows_after_the_deletion_in_the_batch_are_screened() -> None:
    # Before it, in the same batch, the sink's own range delete covers them.
    tombstones, _ = guard()
    before, after = loaded(ANA, MONDAY, 1, 10), loaded(ANA, MONDAY, 2, 10)
    partition = deletion(ANA, 100)
    assert tombstones.screen([before, partition, after]) == [before, partition]


def test_deletions_are_forgotten_after_the_window_or_beyond_the_limit() -> None:
    tombstones, clock = guard(window_s=60, max_entries=2)
    tombstones.screen([deletion(ANA, 100)])
    clock.now += 30
    tombstones.screen([deletion(BEN, 100)])
    assert tombstones.screen([loaded(ANA, MONDAY, 1, 1)]) == []
    clock.now += 31  # ANA's is 61 s old, BEN's 31 s
    assert tombstones.screen([loaded(ANA, MONDAY, 1, 1)]) == [loaded(ANA, MONDAY, 1, 1)]
    assert tombstones.screen([loaded(BEN, MONDAY, 1, 1)]) == []
    assert len(tombstones) == 1
    third = uuid.UUID(int=3)
    tombstones.screen([deletion(third, 100), deletion(ANA, 100, {"day": TUESDAY}),
                       deletion(ANA, 100, {"day": MONDAY})])
    assert len(tombstones) == 2  # BEN's and the third's went first
    assert tombstones.screen([loaded(BEN, MONDAY, 1, 1), loaded(third, MONDAY, 1, 1)]) == [
        loaded(BEN, MONDAY, 1, 1), loaded(third, MONDAY, 1, 1)]


@pytest.mark.parametrize("remembered", [False, True])
@pytest.mark.parametrize("ops", [[], [loaded(ANA, MONDAY, 1, 1, source=CAPTURED)]])
def test_batches_without_deletions_or_loaded_rows_pass_as_they_are(ops, remembered) -> None:
    tombstones, _ = guard()
    if remembered:
        tombstones.screen([deletion(ANA, 100)])
    assert tombstones.screen(ops) is ops


def test_loaded_rows_pass_as_they_are_while_no_deletion_is_remembered() -> None:
    tombstones, _ = guard()
    ops = [loaded(ANA, MONDAY, 1, 1)]
    assert tombstones.screen(ops) is ops


def test_a_deletion_written_again_is_remembered_once() -> None:
    # A retried or replayed batch: the same deletion (same read-time version) again.
    tombstones, clock = guard()
    batch = [deletion(ANA, 100, {"day": MONDAY}), deletion(ANA, 100)]
    tombstones.screen(batch)
    clock.now += 5
    tombstones.screen(batch)
    assert len(tombstones) == 2
    tombstones.screen([deletion(ANA, 101)])  # a later deletion of the partition
    assert len(tombstones) == 3


def test_a_whole_partition_deletion_is_remembered_with_a_masked_clustering_column() -> None:
    # Its bounds name no clustering column, so the sinks apply it: it must screen too. A
    # bound on the masked column is refused by the sinks, and not remembered.
    masked = build_layout(build_schemas(rows())[0][T1], {"seq": "text"})
    tombstones = RangeTombstones("test", lambda _ks, _t: masked)
    tombstones.screen([deletion(BEN, 100, {"day": MONDAY, "seq": "token"})])
    assert len(tombstones) == 0
    tombstones.screen([deletion(ANA, 100)])
    assert tombstones.screen([loaded(ANA, MONDAY, "token", 50)]) == []


def test_a_table_without_clustering_columns() -> None:
    kv = build_layout(TABLES[(KS, "kv")])  # k int partition key, no clustering
    tombstones = RangeTombstones("test", lambda _ks, _t: kv)

    def row(key: int, version: int) -> RowUpsert:
        return RowUpsert(KS, "kv", {"k": key}, {"v": "n"}, version, INITIAL_LOAD)

    deleted = RangeDelete(KS, "kv", {"k": 1}, ClusteringBound({}, True),
                          ClusteringBound({}, True), 100, CAPTURED, True)
    assert tombstones.screen([deleted, row(1, 99), row(2, 99), row(1, 101)]) == [
        deleted, row(2, 99), row(1, 101)]
