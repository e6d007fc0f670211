"""The spool's batch format (connectors/spool_format.py): every batch decodes to what was
encoded, row batches go as columns, frames of earlier versions still read, unknown ones stop."""

from __future__ import annotations

import datetime
import decimal
import pickle
import random
import uuid

import pytest

from connectors.cassandra.events import Position
from connectors.spool_format import SpoolFormatError, decode_batch, encode_batch
from operators.row_ops import (
    EXPIRY,
    INITIAL_LOAD,
    ClusteringBound,
    RangeDelete,
    RowDelete,
    RowUpsert,
    Source,
)


def _value(rng: random.Random):
    return rng.choice([
        None, rng.randrange(-2**70, 2**70), rng.random(), "é\U0001f600" * rng.randrange(3),
        b"\x00\xff" * rng.randrange(3), uuid.UUID(int=rng.randrange(2**128)),
        datetime.datetime(1900, 1, 1) + datetime.timedelta(seconds=rng.randrange(10**10)),
        decimal.Decimal(rng.randrange(10**30)).scaleb(-rng.randrange(40)),
        [1, 2], {"a": (1, "b")}, frozenset({3}), float("inf")])


def _ops(rng: random.Random, count: int, deletes: float) -> list:
    ops = []
    for i in range(count):
        source = rng.choice([Source(f"n{rng.randrange(3)}",
                                    Position(rng.randrange(2**40), rng.randrange(2**31))),
                             INITIAL_LOAD, EXPIRY])
        key = {"p": _value(rng), "c": rng.randrange(100)}
        static = rng.random() < 0.1
        if rng.random() < deletes:
            ops.append(RowDelete("ks", f"t{i % 3}", key, rng.randrange(2**62), source, static))
        else:
            values = {f"v{j}": _value(rng) for j in range(rng.randrange(5))}
            expires = rng.choice([None, rng.randrange(2**62)])
            ops.append(RowUpsert("ks", f"t{i % 3}", key, values, rng.randrange(2**62), source,
                                 static, expires))
    return ops


@pytest.mark.parametrize("deletes", [0.0, 0.3, 1.0])
def test_row_batches_go_as_columns_and_come_back_equal(deletes: float) -> None:
    rng = random.Random(int(deletes * 10))
    for count in (1, 2, 300):
        batch = _ops(rng, count, deletes)
        payload = encode_batch(batch)
        assert payload[:2] == b"R1"
        decoded = decode_batch(payload)
        assert decoded == batch
        assert [type(op) for op in decoded] == [type(op) for op in batch]


def test_other_batches_are_pickled_with_their_tag() -> None:
    rng = random.Random(5)
    source = Source("n1", Position(3, 4))
    range_delete = RangeDelete("ks", "t", {"p": 1}, ClusteringBound({"c": 1}, True),
                               ClusteringBound({}, False), 9, source, include_static=True)
    for batch in ([*_ops(rng, 20, 0.2), range_delete], [range_delete], [1, "two", (3,)], []):
        payload = encode_batch(batch)
        assert payload[:2] == b"P1"
        assert decode_batch(payload) == batch


def test_frames_of_earlier_versions_still_read() -> None:
    batch = _ops(random.Random(6), 50, 0.2)
    assert decode_batch(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)) == batch
    assert decode_batch(pickle.dumps(batch, protocol=2)) == batch


@pytest.mark.parametrize("payload", [b"R9" + b"x" * 10, b"", b"{}"])
def test_an_unknown_format_is_refused_by_name(payload: bytes) -> None:
    with pytest.raises(SpoolFormatError, match="no format this version reads"):
        decode_batch(payload)


@pytest.mark.parametrize("columns", [
    (b"\x01\x01", ["ks"], ["t"], [{}], [{}], [1], ["n"], [1], [2], [False], [None]),  # lengths
    (b"\x02", ["ks"], ["t"], [{}], [{}], [1], ["n"], [1], [2], [False], [None]),  # kind 2
    (b"\x01", ["ks"], ["t"], [{}], [{}], [1], ["n"], [1], [2], [False]),  # a column short
])
def test_an_r1_batch_whose_columns_do_not_match_is_refused(columns) -> None:
    with pytest.raises(SpoolFormatError, match="columns do not match"):
        decode_batch(b"R1" + pickle.dumps(columns))


def test_a_field_r1_does_not_store_stops_the_import() -> None:
    """What the module checks when imported: a stored class with a field R1 does not name
    (added with a default, it would come back as the default) is refused by name."""
    import dataclasses

    from connectors import spool_format

    @dataclasses.dataclass(frozen=True)
    class Grown:
        segment_id: int
        offset: int
        epoch: int = 0

    spool_format._check_stored(spool_format._R1_FIELDS)  # noqa: SLF001 - the classes as they are
    with pytest.raises(TypeError, match="R1 stores .* of Grown, which now has .*epoch"):
        spool_format._check_stored({Grown: ("segment_id", "offset")})  # noqa: SLF001
