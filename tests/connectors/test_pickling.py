"""The pipeline's items pickle as their constructor calls (connectors/pickling.py): equal after
a round trip, through copy too, and pickles made the dataclass way before still load."""

from __future__ import annotations

import copy
import copyreg
import pickle
import uuid
from dataclasses import dataclass

import pytest

from connectors.cassandra.events import (
    Cell,
    ChangeEvent,
    ChangeKind,
    CounterUpdate,
    Deletion,
    Position,
    RangeBound,
    UndecodableUpdate,
)
from connectors.pickling import pickled_by_fields
from operators.row_ops import ClusteringBound, RangeDelete, RowDelete, RowUpsert, Source

SOURCE = Source("n1", Position(7, 99))


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class _OneField:  # attrgetter of one name gives the value, not a tuple: its own branch
    values: tuple


ITEMS = [
    _OneField((1, "x")),
    Position(1, 2),
    SOURCE,
    ChangeEvent("n1", Position(3, 4), 2, "ks", "t", uuid.UUID(int=5), ChangeKind.UPSERT,
                {"p": 1}, {"c": "x"}, {"v": Cell(b"\x01", 10, 0, None, False)}, None,
                Deletion(9, 8), False, RangeBound({"c": 1}, True), RangeBound({"c": 2}, False),
                b"d" * 16),
    CounterUpdate("n1", Position(3, 5), 0, "ks", "c", uuid.UUID(int=6), {"p": 1}, {}, ("n",),
                  12, False),
    UndecodableUpdate("n1", Position(3, 6), "why", b"raw", "ks", "t", None, 2, 40),
    RowUpsert("ks", "t", {"p": 1}, {"v": [1, 2]}, 5, SOURCE, True, 77),
    RowDelete("ks", "t", {"p": 1}, 5, SOURCE),
    RangeDelete("ks", "t", {"p": 1}, ClusteringBound({"c": 1}, True), ClusteringBound({}, False),
                6, SOURCE, include_static=True),
]


@pytest.mark.parametrize("item", ITEMS, ids=lambda item: type(item).__name__)
def test_items_round_trip_as_their_constructor_call(item) -> None:
    reduced = item.__reduce__()
    assert reduced[0] is type(item)
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        assert pickle.loads(pickle.dumps(item, protocol=protocol)) == item  # noqa: S301
    assert copy.copy(item) == item and copy.deepcopy(item) == item


@pytest.mark.parametrize("item", ITEMS, ids=lambda item: type(item).__name__)
def test_pickles_made_the_dataclass_way_still_load(item, monkeypatch) -> None:
    cls = type(item)
    monkeypatch.setattr(cls, "__reduce__", object.__reduce__)  # the dataclass's own state
    old = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
    assert item.__reduce_ex__(2)[0] is copyreg.__newobj__  # the state form, not the call
    monkeypatch.undo()
    assert pickle.loads(old) == item  # noqa: S301 - made here


@pytest.mark.parametrize("spec", [{"init": False}, {"kw_only": True}], ids=str)
def test_a_field_outside_the_positional_init_is_refused(spec) -> None:
    from dataclasses import field, make_dataclass

    odd = make_dataclass("_Odd", [("a", int), ("b", int, field(default=0, **spec))],
                         frozen=True, slots=True)
    with pytest.raises(TypeError, match="every field must be a positional __init__ parameter"):
        pickled_by_fields(odd)


def test_a_hand_written_init_in_another_order_is_refused() -> None:
    with pytest.raises(TypeError, match=r"__init__ takes \('b', 'a'\), the fields are"):
        @pickled_by_fields
        @dataclass(frozen=True, slots=True, init=False)
        class _Swapped:
            a: int
            b: int

            def __init__(self, b: int, a: int) -> None:
                object.__setattr__(self, "a", a)
                object.__setattr__(self, "b", b)
