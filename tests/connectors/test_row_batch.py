"""The shared Gatherer's column-wise conversion gathers what the row-by-row rule says: per key
the highest version, ties to the later operation, images added directly (range deletes) in
order with the pending operations, and a refusal that names the first refused operation."""

from __future__ import annotations

import dataclasses
import datetime
import random
import uuid

import pytest

import connectors.postgres  # noqa: F401 - the sinks import row_batch first (import order)
from connectors import row_batch
from connectors.cassandra.events import Position
from connectors.clickhouse._layout import build_layout as clickhouse_layout
from connectors.postgres._layout import build_layout as postgres_layout
from connectors.row_batch import Gatherer, Target, highest_positions
from connectors.row_sink import Image, RejectedValueError
from operators.row_ops import (
    EXPIRY_NODE,
    INITIAL_LOAD,
    INITIAL_LOAD_NODE,
    RowDelete,
    RowUpsert,
    Source,
)
from tests.connectors.postgres.conftest import column, schemas

KS = "gather"
SCHEMA = schemas([
    column("t", "p", "partition_key", "text", 0, keyspace=KS),
    column("t", "c", "clustering", "bigint", 0, "asc", keyspace=KS),
    column("t", "at", "regular", "timestamp", keyspace=KS),
    column("t", "name", "regular", "text", keyspace=KS),
    column("t", "ok", "regular", "boolean", keyspace=KS),
    column("t", "ref", "regular", "uuid", keyspace=KS),
    column("f", "x", "partition_key", "double", 0, keyspace=KS),
    column("f", "v", "regular", "int", keyspace=KS),
    column("vec", "e", "partition_key", "vector<float, 2>", 0, keyspace=KS),
    column("vec", "v", "regular", "int", keyspace=KS),
])
LAYOUTS = {"postgres": postgres_layout, "clickhouse": clickhouse_layout}


class _Captured(Gatherer):
    def __init__(self, layout_of) -> None:
        super().__init__(layout_of)
        self.written: dict[str, tuple[dict, list]] = {}
        self.columnar: dict[str, bool] = {}  # per table: written as settled columns (no images)

    def flush(self, target: Target) -> None:
        columns = target.columns()
        self.columnar[target.name] = target._batch is not None  # noqa: SLF001 - what we test
        if columns is not None:
            self.wrote(target, columns)
        self.written[target.name] = (dict(target.images), columns)

    def range_delete(self, op) -> None:
        raise NotImplementedError


def _gather(sink: str, ops) -> _Captured:
    layouts = {t: LAYOUTS[sink](SCHEMA[(KS, t)]) for _, t in SCHEMA}
    gatherer = _Captured(lambda _ks, t: layouts[t])
    gatherer.apply(ops)
    return gatherer


def _expected(target: Target, ops) -> dict:
    """The row-by-row rule, with each value converted on its own."""
    images: dict = {}
    for op in ops:
        key = tuple(c.convert(op.key.get(c.name)) for c in target.key)
        values = None if isinstance(op, RowDelete) else tuple(
            c.convert(op.values.get(c.name)) for c in target.values)
        current = images.get(key)
        if current is None or op.version >= current.version:
            images[key] = Image(key, values, op.version, op.source)
    return images


def _ops(rng: random.Random, count: int, keys: int, *, whole_ms: bool = False) -> list:
    """Random upserts and deletes of table t; WHOLE_MS: timestamps in whole milliseconds (as
    the driver decodes them), else in microseconds (rounded by the sinks)."""
    unit = 1000 if whole_ms else 1
    ops = []
    for i in range(count):
        key = {"p": f"p{rng.randrange(3)}", "c": rng.randrange(keys)}
        source = Source(f"n{rng.randrange(2)}", Position(1, i + 1))
        version = rng.randrange(5)
        if rng.random() < 0.2:
            ops.append(RowDelete(KS, "t", key, version, source))
        else:
            values = {"at": datetime.datetime(2026, 1, 1) + datetime.timedelta(
                microseconds=rng.randrange(10**9) * unit) if rng.random() < 0.8 else None,
                "name": rng.choice(["a", "é", None]), "ok": rng.choice([True, False, None]),
                "ref": uuid.UUID(int=rng.randrange(2**64)) if rng.random() < 0.8 else None}
            for name in rng.sample(sorted(values), rng.randrange(2)):
                del values[name]  # a partial image: missing columns are null
            ops.append(RowUpsert(KS, "t", key, values, version, source))
    return ops


@pytest.mark.parametrize("sink", sorted(LAYOUTS))
@pytest.mark.parametrize("keys", [10, 10**9])  # repeated keys; distinct keys
@pytest.mark.parametrize("whole_ms", [False, True])
def test_column_gathering_matches_the_row_rule(sink: str, keys: int, whole_ms: bool) -> None:
    rng = random.Random(keys)
    ops = _ops(rng, 2000, keys, whole_ms=whole_ms)
    gatherer = _gather(sink, ops)
    ((name, (images, columns)),) = gatherer.written.items()
    target = Target(name, *_target_columns(sink, static=False))
    expected = _expected(target, ops)
    assert images == expected
    rows = list(zip(*columns, strict=True))
    assert len(rows) == len(expected)
    width, count = len(target.key), len(target.values)
    for row in rows:
        image = expected[row[:width]]
        assert row[width:width + count] == (image.values or (None,) * count)
        assert row[width + count:] == (image.version, image.values is None, image.source.node,
                                       image.source.position.segment_id,
                                       image.source.position.offset)


def _target_columns(sink: str, static: bool) -> tuple:
    layout = LAYOUTS[sink](SCHEMA[(KS, "t")])
    return (layout.partition, layout.static) if static else (layout.key, layout.regular)


@pytest.mark.parametrize("sink", sorted(LAYOUTS))
def test_nan_keys_are_one_row(sink: str) -> None:
    nan = float("nan")
    ops = [RowUpsert(KS, "f", {"x": nan}, {"v": i}, 1, Source("n", Position(1, i)))
           for i in range(3)]
    (images, columns), = _gather(sink, ops).written.values()
    assert len(images) == 1 and len(columns[0]) == 1
    assert next(iter(images.values())).values == (2,)  # ties: the later operation


@pytest.mark.parametrize("sink", sorted(LAYOUTS))
def test_vector_keys_are_gathered_per_row(sink: str) -> None:
    """A vector key (PostgreSQL writes it as an array, a list) is one row per vector, NaN
    elements equal as Cassandra has them; a list is no dict key, so it has a slot of its own."""
    nan = float("nan")
    keys = [[1.0, 2.0], [1.0, 2.0], [2.0, 1.0], [nan, 0.5], [nan, 0.5]]
    ops = [RowUpsert(KS, "vec", {"e": list(e)}, {"v": i}, 1, Source("n", Position(1, i)))
           for i, e in enumerate(keys)]
    (images, columns), = _gather(sink, ops).written.values()
    assert len(columns[0]) == 3
    assert sorted(image.values[0] for image in images.values()) == [1, 2, 4]  # ties: later


def test_image_added_after_pending_operations_wins_ties() -> None:
    layout = postgres_layout(SCHEMA[(KS, "t")])
    gatherer = _Captured(lambda _ks, _t: layout)
    source = Source("n", Position(1, 1))
    gatherer.row(RowUpsert(KS, "t", {"p": "a", "c": 1}, {"name": "x"}, 5, source))
    target = gatherer.targets[layout.rows_table]
    target.add(Image(("a", 1), None, 5, source))  # a range delete's tombstone, same version
    gatherer.row(RowUpsert(KS, "t", {"p": "a", "c": 1}, {"name": "y"}, 4, source))  # older
    gatherer.flush_all()
    (images, columns), = gatherer.written.values()
    assert list(images.values()) == [Image(("a", 1), None, 5, source)]
    assert columns[len(layout.key) + len(layout.regular) + 1] == [True]


@pytest.mark.parametrize("sink", sorted(LAYOUTS))
def test_refusal_names_the_column_of_the_first_refused_operation(sink: str) -> None:
    source = Source("n", Position(1, 1))
    ops = [RowUpsert(KS, "t", {"p": "a", "c": i}, {"name": "ok"}, 1, source) for i in range(50)]
    ops[20] = RowUpsert(KS, "t", {"p": "a", "c": 20}, {"name": 7}, 1, source)  # not text
    with pytest.raises(RejectedValueError, match="column name"):
        _gather(sink, ops)
    ops[20] = RowUpsert(KS, "t", {"p": "a", "c": 20}, {"nope": 1}, 1, source)
    with pytest.raises(RejectedValueError, match="column nope"):
        _gather(sink, ops)
    ops[20] = RowDelete(KS, "t", {"p": "a"}, 1, source)
    with pytest.raises(RejectedValueError, match="column c"):
        _gather(sink, ops)


@pytest.mark.parametrize("sink", sorted(LAYOUTS))
def test_a_batch_of_several_tables_gathers_each_in_order(sink: str) -> None:
    """Operations of two tables interleaved (not the one-table fast path): each table gets
    what the row rule gives for its own operations."""
    rng = random.Random(7)
    ops = _ops(rng, 600, 20)
    floats = [RowUpsert(KS, "f", {"x": float(rng.randrange(5))}, {"v": i}, rng.randrange(3),
                      Source("n", Position(2, i))) for i in range(300)]
    mixed = [op for pair in zip(ops[:300], floats, strict=True) for op in pair] + ops[300:]
    written = _gather(sink, mixed).written
    layouts = {t: LAYOUTS[sink](SCHEMA[(KS, t)]) for t in ("t", "f")}
    for table, table_ops in (("t", ops), ("f", floats)):
        layout = layouts[table]
        images, _ = written[layout.rows_table]
        assert images == _expected(Target(layout.rows_table, layout.key, layout.regular),
                                   table_ops)


def _as_columns(ops: list) -> list[tuple[list, list, list]]:
    """OPS's sources as the node, segment and offset columns of two targets (halves)."""
    halves = (ops[:len(ops) // 2], ops[len(ops) // 2:])
    return [([op.source.node for op in half], [op.source.position.segment_id for op in half],
             [op.source.position.offset for op in half]) for half in halves if half]


@pytest.mark.parametrize("highest", [
    highest_positions, lambda ops: row_batch.highest_of_columns(_as_columns(list(ops)))],
    ids=["from operations", "from written columns"])
def test_highest_positions_per_node_leave_out_load_and_expiry(highest) -> None:
    rng = random.Random(3)
    nodes = ["n1", "n2", INITIAL_LOAD_NODE, EXPIRY_NODE]
    for count in (1, 5, 500):
        ops = [RowUpsert(KS, "t", {"p": "a", "c": i}, {}, 1,
                         Source(rng.choice(nodes), Position(rng.randrange(3),
                                                            rng.randrange(1000))))
               for i in range(count)]
        ops.append(RowDelete(KS, "t", {"p": "a", "c": 0}, 1, Source("n3", Position(0, 5))))
        expected: dict = {}
        for op in ops:
            if op.source.node in (INITIAL_LOAD_NODE, EXPIRY_NODE):
                continue
            expected[op.source.node] = max(expected.get(op.source.node, op.source.position),
                                           op.source.position)
        assert highest(iter(ops)) == expected
    only_load = [RowUpsert(KS, "t", {"p": "a", "c": 1}, {}, 1, INITIAL_LOAD)]
    assert highest(only_load) == {}
    one_node = [RowUpsert(KS, "t", {"p": "a", "c": i}, {}, 1, Source("n1", Position(s, o)))
                for i, (s, o) in enumerate([(2, 5), (3, 1), (2, 900), (1, 7)])]
    assert highest(one_node) == {"n1": Position(3, 1)}  # segment first, then offset


@pytest.mark.parametrize("sink", sorted(LAYOUTS))
@pytest.mark.parametrize("keys", [10, 10**9])  # repeated keys (gathered); distinct keys
def test_positions_of_a_batch_are_those_of_its_operations(sink: str, keys: int) -> None:
    """Read from the written source columns, or from the operations again where those do not
    hold every operation: the same either way, superseded images and load rows included."""
    rng = random.Random(keys)
    for _ in range(20):
        ops = [dataclasses.replace(op, source=Source(
                   rng.choice(["n1", "n2", INITIAL_LOAD_NODE]),
                   Position(rng.randrange(3), rng.randrange(1000))))
               for op in _ops(rng, 300, keys)]
        gatherer = _gather(sink, ops)
        from_columns = gatherer._written_sources is not None  # noqa: SLF001 - the path taken
        assert from_columns == (keys > 10)
        assert gatherer.positions(ops) == highest_positions(ops)


def test_columns_say_whether_they_hold_every_operation() -> None:
    layout = clickhouse_layout(SCHEMA[(KS, "t")])
    distinct, repeated = Target("t", layout.key, layout.regular), \
        Target("t", layout.key, layout.regular)
    gatherer = Gatherer(lambda ks, t: layout)
    for target, keys in ((distinct, [1, 2, 3]), (repeated, [1, 2, 1])):
        target.settle = gatherer.settle
        target.pending = [RowUpsert(KS, "t", {"p": "a", "c": c}, {}, 1,
                                    Source("n1", Position(1, i))) for i, c in enumerate(keys)]
        columns = target.columns()
        assert columns is not None and len(columns[-1]) == len(set(keys))
    assert distinct.every_operation and not repeated.every_operation


@pytest.mark.parametrize("sink", sorted(LAYOUTS))
def test_whole_column_conversion_equals_value_by_value(sink: str) -> None:
    """Columns without nulls go through the converters' whole-column forms: the same values as
    one by one, for timestamps in whole milliseconds, in microseconds, before 1970, and for
    text with and without unusual characters."""
    rng = random.Random(11)
    epoch = datetime.datetime(1970, 1, 1)
    samples = {
        "at": [[epoch + datetime.timedelta(milliseconds=rng.randrange(-10**12, 10**13))
                for _ in range(300)],
               [epoch + datetime.timedelta(microseconds=rng.randrange(-10**15, 10**16))
                for _ in range(300)]],
        "name": [[rng.choice(["a", "é", "", "\U0001f600"]) * rng.randrange(4)
                  for _ in range(300)]],
    }
    layout = LAYOUTS[sink](SCHEMA[(KS, "t")])
    checked = 0
    for index, *converters in row_batch._plan(layout.regular):  # noqa: SLF001
        convert = layout.regular[index].convert
        for sample in samples.get(layout.regular[index].name, []):
            assert converters[2] is not None  # a whole-column form exists for these types
            assert row_batch._convert(sample, *converters) == list(map(convert, sample))  # noqa: SLF001
            checked += 1
    assert checked == 3


def test_clickhouse_number_columns_convert_whole_as_value_by_value() -> None:
    """ClickHouse's int and double columns of one type go whole; a column mixing in another
    type (a bool, an int among doubles) goes value by value, as before."""
    layout = clickhouse_layout(SCHEMA[(KS, "f")])
    plans = {layout.regular[i].name: (layout.regular[i].convert, c)
             for i, *c in row_batch._plan(layout.regular)}  # noqa: SLF001
    plans["x"] = (layout.key[0].convert, row_batch._plan(layout.key)[0][1:])  # noqa: SLF001
    samples = {"v": [[1, -2**31, 2**31 - 1], [1, True, 3]],
               "x": [[0.5, -1e300, float("inf")], [0.5, 2, 3.0]]}
    for name, (convert, converters) in plans.items():
        assert converters[2] is not None  # a whole-column form
        for sample in samples[name]:
            got = row_batch._convert(list(sample), *converters)  # noqa: SLF001
            assert got == list(map(convert, sample))
            assert list(map(type, got)) == list(map(type, map(convert, sample)))


@pytest.mark.parametrize("sink", sorted(LAYOUTS))
def test_keys_and_values_that_are_not_dicts_gather_the_same(sink: str) -> None:
    """Operations whose key or values are other mappings (read-only views) take the general
    path, not dict.get, and give the same columns."""
    from types import MappingProxyType

    ops = _ops(random.Random(9), 300, 40)
    views = [RowUpsert(op.keyspace, op.table, MappingProxyType(dict(op.key)),
                       MappingProxyType(dict(op.values)), op.version, op.source)
             if isinstance(op, RowUpsert) else op for op in ops]
    assert _gather(sink, views).written == _gather(sink, ops).written


@pytest.mark.parametrize(("columns", "distinct"), [
    ([["p0", "p0", "p1"], [1, 2, 1]], True),  # the last column repeats, the keys do not
    ([["p0", "p1", "p2"], [1, 2, 3]], True),  # the last column alone tells them apart
    ([["p0", "p1", "p0"], [1, 2, 1]], False),  # (p0, 1) twice
    ([[1, 2, 1]], False),  # one key column, repeated
    ([[1, 2, 3]], True),
    ([[0.0, -0.0]], False),  # equal keys as Python (and the destinations) compare them
])
def test_distinct_keys(columns: list[list], distinct: bool) -> None:
    assert row_batch._distinct(columns, len(columns[0])) is distinct  # noqa: SLF001


def test_keys_distinct_only_as_a_whole_are_gathered_as_the_row_rule() -> None:
    keys = [(p, c) for c in range(2) for p in ("p0", "p1", "p2")]
    ops = [RowUpsert(KS, "t", {"p": p, "c": c}, {"name": p}, 1, Source("n1", Position(1, i + 1)))
           for i, (p, c) in enumerate(keys)]
    for sink in sorted(LAYOUTS):
        gatherer = _gather(sink, ops)
        ((name, (images, _)),) = gatherer.written.items()
        assert images == _expected(Target(name, *_target_columns(sink, static=False)), ops)
        assert len(images) == 6
        assert gatherer.columnar[name]  # distinct keys stay columns: no image per key
