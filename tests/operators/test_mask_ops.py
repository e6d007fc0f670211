"""mask_operations: every operation comes back whole, with only its keys, values and bounds
masked. The rebuilt operations are made field by field, so a field added to an operation class
must be carried over; this test gives every field a non-default value to catch one that is not.
"""

from __future__ import annotations

import dataclasses

import pytest

from connectors.cassandra.events import Position
from operators.mask_ops import mask_operations
from operators.masking import Masker, MaskingPolicy
from operators.masking.strategies import hmac_hex
from operators.row_ops import ClusteringBound, RangeDelete, RowDelete, RowUpsert, Source

SOURCE = Source("node-7", Position(12, 345))


class NoSecrets:
    def resolve(self, reference: str) -> str:
        raise AssertionError(f"a redact/pass policy resolved {reference}")


def masker() -> Masker:
    columns = {
        "id": {"class": "none", "reason": "a surrogate key"},
        "day": {"class": "none", "reason": "a date"},
        "diagnosis": {"class": "diagnosis", "strategy": "redact"},
        "visits": {"class": "none", "reason": "a count"},
    }
    policy = MaskingPolicy.from_mapping({"version": 1, "unclassified_strategy": "redact",
                                         "tables": {"ks": {"t": {"columns": columns}}}})
    return Masker(policy, NoSecrets())


OPERATIONS = [
    RowUpsert("ks", "t", {"id": 1, "day": 2}, {"diagnosis": "flu", "visits": 3}, 99, SOURCE,
              static=True, expires=1_000),
    RowDelete("ks", "t", {"id": 1, "day": 2}, 98, SOURCE, static=True),
    RangeDelete("ks", "t", {"id": 1}, ClusteringBound({"day": 2}, inclusive=False),
                ClusteringBound({"day": 9}, inclusive=True), 97, SOURCE, include_static=True),
]


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: type(op).__name__)
def test_every_field_is_carried_over(operation) -> None:
    for field in dataclasses.fields(operation):
        # A field left at its default would not show a rebuild that drops it.
        assert field.default is dataclasses.MISSING or getattr(operation, field.name) != \
            field.default, f"give {type(operation).__name__}.{field.name} a non-default value"
    [masked] = mask_operations(masker(), [operation])
    assert type(masked) is type(operation)
    expected = operation
    if isinstance(operation, RowUpsert):
        expected = dataclasses.replace(operation, values={"diagnosis": None, "visits": 3})
    assert masked == expected


def test_a_batch_keeps_its_order_and_masks_every_operation() -> None:
    batch = [*OPERATIONS, dataclasses.replace(OPERATIONS[0], values={"diagnosis": None,
                                                                    "visits": 4})]
    masked = mask_operations(masker(), batch)
    assert [type(op) for op in masked] == [type(op) for op in batch]
    assert [op.version for op in masked] == [99, 98, 97, 99]
    assert [op.values for op in masked if isinstance(op, RowUpsert)] == [
        {"diagnosis": None, "visits": 3}, {"diagnosis": None, "visits": 4}]


class _EqualsNone(str):
    """A text value that claims to equal None (== only; it is not None)."""

    def __eq__(self, other: object) -> bool:
        return other is None or str.__eq__(self, other)

    __hash__ = str.__hash__


def test_a_value_that_compares_equal_to_none_is_still_masked() -> None:
    key = "k" * 40

    class Key:
        def resolve(self, reference: str) -> str:
            return key

    policy = MaskingPolicy.from_mapping({"version": 1, "hmac": {"key": "env:UNUSED"},
                                         "tables": {"ks": {"t": {"columns": {
                                             "id": {"class": "none", "reason": "a key"},
                                             "email": {"class": "email", "strategy": "hmac"}}}}}})
    audits = []
    masker = Masker(policy, Key(), audit=audits.append)
    value = _EqualsNone("ana@example.org")
    [masked] = masker.mask_rows("ks", "t", [{"id": 1, "email": value}])
    assert masked["email"] == hmac_hex(key.encode(), b"ana@example.org")
    [email] = [c for c in audits[0].columns if c.column == "email"]
    assert (email.values, email.nulls) == (1, 0)
