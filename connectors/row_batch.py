"""Gathering a batch of row operations per destination table, shared by the sinks.

Each destination table (rows or static companion) collects the images of its keys, keeping per
key the highest version (ties: the later operation), with key and values converted for the
destination. A sink subclasses `Gatherer` with how a table is written (`flush`) and how a range
delete finds its rows (`range_delete`). A value the conversion refuses raises the sink's
RejectedValueError naming table, column and key fingerprint, never the value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from connectors.cassandra.events import Position
from connectors.postgres._values import ValueRefused, identity
from connectors.row_sink import Image, RejectedValueError, key_fingerprint
from operators.row_ops import RangeDelete, RowDelete, RowOp, RowUpsert

_CONVERSION_ERRORS = (ValueRefused, ValueError, TypeError, OverflowError, AttributeError)


@dataclass
class Target:
    """One destination table and the images gathered for it."""

    name: str
    key: tuple[Any, ...]  # the sink's Column objects
    values: tuple[Any, ...]
    images: dict[tuple, Image] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Conversion plans: identity converters are skipped on the hot path.
        self.key_plan = tuple((c.name, None if c.convert is identity else c.convert)
                              for c in self.key)
        self.value_plan = tuple((c.name, None if c.convert is identity else c.convert)
                                for c in self.values)
        self.value_names = frozenset(c.name for c in self.values)

    def add(self, image: Image) -> None:
        slot = _slot(image.key)
        current = self.images.get(slot)
        if current is None or image.version >= current.version:
            self.images[slot] = image


_NAN = ("NaN",)  # stands for a NaN float in a dict key (a tuple: no column value is one)


def _slot(key: tuple) -> tuple:
    """The `Target.images` key of a row key. Python's nan != nan, but Cassandra (Float.compare)
    and the destinations' keys treat NaN as equal to NaN: without this, two images of one row
    with a NaN float key column were both kept, and PostgreSQL's INSERT ... ON CONFLICT failed
    the whole batch (CardinalityViolation), again on every replay."""
    for value in key:
        if value != value:  # noqa: PLR0124 - true only for NaN
            return tuple(_NAN if v != v else v for v in key)  # noqa: PLR0124
    return key


class Gatherer:
    rejected: type[RejectedValueError] = RejectedValueError

    def __init__(self, layout_of: Callable[[str, str], Any]) -> None:
        self.layout_of = layout_of
        self.targets: dict[str, Target] = {}
        self.cached: dict[tuple[str, str, bool], Target] = {}

    # --- to implement --------------------------------------------------------------------

    def flush(self, target: Target) -> None:
        raise NotImplementedError

    def range_delete(self, op: RangeDelete) -> None:
        raise NotImplementedError

    # --- shared --------------------------------------------------------------------------

    def apply(self, ops: Iterable[RowOp]) -> None:
        for op in ops:
            if isinstance(op, RangeDelete):
                self.range_delete(op)
            elif isinstance(op, RowUpsert | RowDelete):
                self.row(op)
            else:
                raise TypeError(f"not a row operation: {type(op).__name__}")
        self.flush_all()

    def flush_all(self) -> None:
        for target in self.targets.values():
            self.flush(target)
        self.targets.clear()

    def target(self, layout: Any, static: bool) -> Target:
        if static and layout.static_table is None:
            raise self.rejected(layout.rows_table, None, None,
                                f"{layout.keyspace}.{layout.table} has no static columns")
        name = layout.static_table if static else layout.rows_table
        found = self.targets.get(name)
        if found is None:
            key = layout.partition if static else layout.key
            values = layout.static if static else layout.regular
            found = self.targets[name] = Target(name, key, values)
        return found

    def row(self, op: RowUpsert | RowDelete) -> None:
        cache_key = (op.keyspace, op.table, op.static)
        target = self.cached.get(cache_key)
        if target is None or target.name not in self.targets:  # new, or flushed since
            target = self.cached[cache_key] = self.target(
                self.layout_of(op.keyspace, op.table), op.static)
        values = None
        try:  # the hot path; any problem is redone slowly to name the column
            got = op.key.get
            key = tuple(got(n) if f is None else f(got(n)) for n, f in target.key_plan)
            if None in key:
                raise ValueRefused("NULL key")
            if isinstance(op, RowUpsert):
                if not target.value_names.issuperset(op.values):
                    raise ValueRefused("unknown column")
                got = op.values.get
                values = tuple(got(n) if f is None else f(got(n)) for n, f in target.value_plan)
        except Exception:  # noqa: BLE001 - redone slowly to name the column, then raised
            key, values = self._row_slowly(target, op)
        target.add(Image(key, values, op.version, op.source))

    def _row_slowly(self, target: Target, op: RowUpsert | RowDelete) -> tuple[tuple, Any]:
        key = self.convert_key(target.name, target.key, op.key)
        if not isinstance(op, RowUpsert):
            return key, None
        unknown = set(op.values) - target.value_names
        if unknown:
            raise self.rejected(target.name, sorted(unknown)[0], key_fingerprint(key),
                                "the column is not in the table's schema")
        return key, tuple(self.convert(target.name, key, c, op.values.get(c.name))
                          for c in target.values)

    def convert(self, table: str, key: tuple, column: Any, value: Any) -> Any:
        try:
            return column.convert(value)
        except _CONVERSION_ERRORS as error:
            reason = str(error) if isinstance(error, ValueRefused) else type(error).__name__
            raise self.rejected(table, column.name, key_fingerprint(key), reason) from None

    def convert_key(self, table: str, columns: tuple[Any, ...], key: Mapping[str, Any]) -> tuple:
        raw = tuple(key.get(c.name) for c in columns)
        converted = tuple(self.convert(table, raw, c, key.get(c.name)) for c in columns)
        missing = [c.name for c, v in zip(columns, converted, strict=True) if v is None]
        if missing:
            raise self.rejected(table, missing[0], key_fingerprint(converted),
                                "a primary-key column is NULL or missing")
        return converted


def highest_positions(ops: Iterable[RowOp]) -> dict[str, Position]:
    """Per node, the highest source position among OPS (what a progress row records)."""
    highest: dict[str, Position] = {}
    for op in ops:
        node, position = op.source.node, op.source.position
        current = highest.get(node)
        if current is None or (position.segment_id, position.offset) > \
                (current.segment_id, current.offset):
            highest[node] = position
    return highest
