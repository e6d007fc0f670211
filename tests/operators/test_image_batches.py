"""Row images a micro-batch at a time: each partition's events in order, partitions at once."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field

import pytest

from operators.image_batches import ImageBatches

TABLE = uuid.uuid4()


@dataclass(frozen=True)
class Event:
    """What ImageBatches reads of a change event: its table and partition key."""

    partition: int
    seq: int
    table_id: uuid.UUID = TABLE
    partition_key: dict = field(default_factory=dict)

    @staticmethod
    def of(partition: int, seq: int) -> Event:
        return Event(partition, seq, partition_key={"id": partition})


def test_partitions_are_read_at_once_and_each_in_order():
    partitions, per_partition = 6, 5
    # Every partition's first read waits for all the others' first reads: only concurrent
    # groups get past the barrier (sequential ones would break it at its timeout).
    barrier = threading.Barrier(partitions, timeout=10)
    seen: dict[int, list[int]] = {}
    lock = threading.Lock()

    def operations(event):
        if event.seq == 0:
            barrier.wait()
        with lock:
            seen.setdefault(event.partition, []).append(event.seq)
        return [f"op-{event.partition}-{event.seq}"]

    batch = [(f"bucket{p % 2}", Event.of(p, s)) for s in range(per_partition)
             for p in range(partitions)]
    out = ImageBatches(operations, concurrency=partitions)(batch)

    assert seen == {p: list(range(per_partition)) for p in range(partitions)}
    assert sorted(out) == sorted((key, f"op-{e.partition}-{e.seq}") for key, e in batch)
    for p in range(partitions):  # the output keeps each partition's order
        mine = [o for _, o in out if o.startswith(f"op-{p}-")]
        assert mine == [f"op-{p}-{s}" for s in range(per_partition)]


def test_an_error_in_any_partition_reaches_the_flow():
    def operations(event):
        if event.partition == 3:
            raise LookupError("no schema for ks.t")
        return []

    with pytest.raises(LookupError, match="no schema"):
        ImageBatches(operations, concurrency=4)([("b", Event.of(p, 0)) for p in range(5)])


def test_unhashable_key_values_still_group():
    events = [("b", Event(0, s, partition_key={"tags": [1, 2]})) for s in range(3)]
    out = ImageBatches(lambda e: [e.seq], concurrency=4)(events)
    assert out == [("b", 0), ("b", 1), ("b", 2)]


def test_partitions_read_at_once_skip_the_ordered_path_unless_any_event_is_not_served():
    """Partitions whose events all qualify go to read_at_once together; a partition with an
    event it does not serve (None) is read the ordered way, every event of it."""
    one_by_one: list[tuple[int, int]] = []
    asked: list[list[tuple[int, int]]] = []

    def operations(event):
        one_by_one.append((event.partition, event.seq))
        return [f"slow-{event.partition}-{event.seq}"]

    def read_at_once(events, map_chunks):
        asked.append([(e.partition, e.seq) for e in events])
        assert list(map_chunks(lambda x: x * 2, [1, 2])) == [2, 4]  # the batch's pool
        return [None if (e.partition, e.seq) == (2, 1) else [f"fast-{e.partition}-{e.seq}"]
                for e in events]

    batch = [("b", Event.of(p, s)) for s in range(2) for p in range(4)]
    out = ImageBatches(operations, concurrency=4, can_read_at_once=lambda e: e.partition != 3,
                       read_at_once=read_at_once)(batch)

    assert asked == [[(p, s) for p in range(3) for s in range(2)]]  # grouped by partition
    assert sorted(one_by_one) == [(2, 0), (2, 1), (3, 0), (3, 1)]
    assert sorted(o for _, o in out) == sorted(
        [f"fast-{p}-{s}" for p in (0, 1) for s in range(2)]
        + [f"slow-{p}-{s}" for p in (2, 3) for s in range(2)])
    for p in range(4):  # each partition's order kept
        mine = [o for _, o in out if o.endswith(tuple(f"-{p}-{s}" for s in range(2)))]
        assert [o[-1] for o in mine] == ["0", "1"]


def test_read_at_once_needs_both_halves():
    with pytest.raises(ValueError, match="go together"):
        ImageBatches(lambda e: [], can_read_at_once=lambda e: True)
