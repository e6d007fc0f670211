"""Masking applied to row operations, a micro-batch at a time, before they reach any sink.

Keys are masked with the same rules as values (HMAC and tokenization are deterministic, so a
masked primary key still identifies its row and upserts land on it). Everything of a batch that
belongs to one table goes to the masker in one call: one tokenizer round trip per table and
batch. Range bounds are masked too; a sink refuses ranges on masked clustering columns (their
order is gone), which it says by name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from operators.masking import Masker
from operators.row_ops import ClusteringBound, RangeDelete, RowDelete, RowOp, RowUpsert


def mask_operations(masker: Masker, ops: Sequence[RowOp]) -> list[RowOp]:
    """The operations with every key, value and bound masked; same order."""
    # Each operation contributes one or more "rows" (plain column -> value dicts) to its table's
    # batch; after one mask_rows call per table they are put back where they came from.
    rows: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    slots: list[list[tuple[tuple[str, str], int]]] = []
    for operation in ops:
        table = (operation.keyspace, operation.table)
        mine = []
        for part in _parts(operation):
            mine.append((table, len(rows[table])))
            rows[table].append(part)
        slots.append(mine)
    masked = {table: masker.mask_rows(table[0], table[1], batch) for table, batch in rows.items()}
    return [_rebuild(operation, [masked[t][i] for t, i in mine])
            for operation, mine in zip(ops, slots, strict=True)]


def _parts(operation: RowOp) -> list[Mapping[str, Any]]:
    if isinstance(operation, RowUpsert):
        return [operation.key, operation.values]
    if isinstance(operation, RowDelete):
        return [operation.key]
    return [operation.partition_key, operation.start.prefix, operation.end.prefix]


def _rebuild(operation: RowOp, parts: list[dict[str, Any]]) -> RowOp:
    # Constructors, not dataclasses.replace: that looks up the fields on every call, and this
    # runs once per operation (a third of masking's time went there).
    o = operation
    if isinstance(o, RowUpsert):
        return RowUpsert(o.keyspace, o.table, parts[0], parts[1], o.version, o.source, o.static,
                         o.expires)
    if isinstance(o, RowDelete):
        return RowDelete(o.keyspace, o.table, parts[0], o.version, o.source, o.static)
    assert isinstance(o, RangeDelete)
    return RangeDelete(o.keyspace, o.table, parts[0], ClusteringBound(parts[1], o.start.inclusive),
                       ClusteringBound(parts[2], o.end.inclusive), o.version, o.source,
                       o.include_static)
