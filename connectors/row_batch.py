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
from itertools import compress, repeat
from operator import attrgetter, eq, is_not, not_
from typing import Any

from connectors.cassandra.events import Position
from connectors.row_sink import Image, RejectedValueError, key_fingerprint
from connectors.type_map import ValueRefused, identity
from operators.row_ops import (
    NOT_IN_COMMIT_LOG,
    RangeDelete,
    RowDelete,
    RowOp,
    RowUpsert,
)

_CONVERSION_ERRORS = (ValueRefused, ValueError, TypeError, OverflowError, AttributeError)


@dataclass
class Target:
    """One destination table and the images gathered for it.

    Row operations are queued as they come (`pending`) and converted column by column when the
    batch is written (`Gatherer.settle`): one converter call per value in a C-level loop, no
    per-row tuples or Image objects. Pending operations whose keys are all distinct (the usual
    batch) stay columns (`columns()` hands them to the writer as they are); a repeated key, a
    NaN-capable key or an image added directly (range deletes) gathers `images` per key."""

    name: str
    key: tuple[Any, ...]  # the sink's Column objects
    values: tuple[Any, ...]
    _images: dict[tuple, Image] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.key_names = tuple(c.name for c in self.key)
        self.value_names = tuple(c.name for c in self.values)
        self.value_name_set = frozenset(self.value_names)
        # Per column: (index, converter, converter for a column without None); identity
        # converters are skipped.
        self.key_plan = _plan(self.key)
        self.value_plan = _plan(self.values)
        # Only float-like keys can hold NaN (see key_slot); others skip the check.
        self.nan_keys = any(getattr(c.type, "kind", None) not in _NO_NAN_KINDS
                            for c in self.key)
        self.pending: list[RowUpsert | RowDelete] = []  # in operation order
        self.settle: Callable[[Target], None] | None = None
        # Settled operations with distinct keys, as columns: key columns, value columns,
        # versions, deleted flags, sources. Only while `_images` is empty.
        self._batch: list[list] | None = None

    def has_converted(self) -> bool:
        """Whether it holds converted operations (settled or gathered), not only pending."""
        return self._batch is not None or bool(self._images)

    @property
    def every_operation(self) -> bool:
        """Whether `columns()` gives every operation the target was given (settled at once,
        keys distinct), not images gathered per key: then their sources say the highest
        positions of those operations (`highest_of_columns`) without another pass over them.
        Pending operations (not yet settled) are not in it."""
        return self._batch is not None and not self.pending

    def convert_pending(self) -> None:
        if self.pending:
            assert self.settle is not None
            self.settle(self)

    @property
    def images(self) -> dict[tuple, Image]:
        """Per key slot, the image to write (converts what is pending)."""
        self.convert_pending()
        batch, self._batch = self._batch, None
        if batch is not None:
            self.add_columns(batch)
        return self._images

    def add(self, image: Image) -> None:
        images = self.images  # pending (earlier) operations first: ties go to the later one
        slot = key_slot(image.key) if self.nan_keys else image.key
        current = images.get(slot)
        if current is None or image.version >= current.version:
            images[slot] = image

    def absorb(self, other: Target) -> None:
        """Gather OTHER's operations (of the same table, later than this one's) into this."""
        other.convert_pending()
        self.convert_pending()
        if other._batch is not None:
            self.images  # noqa: B018 - this one's first: ties go to the later operation
            self.add_columns(other._batch)
        for image in other._images.values():
            self.add(image)

    def add_columns(self, batch: list[list]) -> None:
        """Gather converted operations (columns as in `_batch`) in order into `_images`."""
        width, count = len(self.key), len(self.values)
        images, nan_keys = self._images, self.nan_keys
        for row in zip(*batch, strict=True):
            key = row[:width]
            version = row[-3]
            slot = key_slot(key) if nan_keys else key
            current = images.get(slot)
            if current is None or version >= current.version:
                images[slot] = Image(key, None if row[-2] else row[width:width + count],
                                     version, row[-1])

    def columns(self) -> list[list] | None:
        """What to write, as columns: key columns, value columns, then _cdc_version,
        _cdc_deleted, _cdc_source_node, _cdc_source_segment, _cdc_source_offset (in
        `images` order when gathered per key). None: nothing to write."""
        self.convert_pending()
        batch = self._batch
        if batch is None:
            if not self._images:
                return None
            nulls = (None,) * len(self.values)
            batch = [list(c) for c in zip(*(
                image.key + (image.values or nulls) + (image.version, image.values is None,
                                                       image.source)
                for image in self._images.values()), strict=True)]
        positions = list(map(_position_of, batch[-1]))
        return batch[:-1] + [list(map(_node_of, batch[-1])),
                             list(map(_segment_of, positions)),
                             list(map(_offset_of, positions))]


_NO_NAN_KINDS = frozenset({"ascii", "text", "varchar", "int", "bigint", "smallint", "tinyint",
                           "uuid", "timeuuid", "timestamp", "date", "time", "blob", "boolean",
                           "inet", "varint", "duration"})
_NO_VALUES: dict[str, Any] = {}  # a delete's values; read only, never mutated
_ROW_KINDS = frozenset({RowUpsert, RowDelete})
_target_of = attrgetter("keyspace", "table", "static")
_key_of, _values_of = attrgetter("key"), attrgetter("values")
_version_of, _source_of = attrgetter("version"), attrgetter("source")
_node_of, _position_of = attrgetter("node"), attrgetter("position")
_segment_of, _offset_of = attrgetter("segment_id"), attrgetter("offset")


ColumnPlan = tuple[int, Callable, Callable, Callable | None]


def _plan(columns: tuple[Any, ...]) -> tuple[ColumnPlan, ...]:
    """Per column whose converter is not the identity: (index, converter, converter valid for
    a column holding no None, whole-column converter or None). A None-safe wrapper exposes its
    inner function as `__wrapped__` (one call per value instead of two); a converter may carry
    `column`: list -> list, the same values converted by C-level loops, raising (anything)
    where it cannot vouch for the result, and the values are then converted one by one."""
    return tuple((i, c.convert, getattr(c.convert, "__wrapped__", c.convert),
                  getattr(c.convert, "column", None))
                 for i, c in enumerate(columns) if c.convert is not identity)


def _columns(mappings: list[Mapping[str, Any]], names: tuple[str, ...]) -> list[list]:
    """Per name, mapping.get(name) of each of MAPPINGS: by dict.get in C-level loops (the
    flow's are plain dicts; dict.get refuses anything but a dict or a subclass, with
    TypeError, and skips a subclass's own get), else by each one's own get. Asking dict.get
    first instead of checking every mapping's type first saves a pass over the batch (0.6 ms
    per 10k)."""
    try:
        return [list(map(dict.get, mappings, repeat(name))) for name in names]
    except TypeError:
        return [[m.get(name) for m in mappings] for name in names]


def _has_none(column: list) -> bool:
    # By identity (`None in column` calls __eq__, a Python method for UUID).
    return not all(map(is_not, column, repeat(None)))


def _convert(column: list, convert: Callable, convert_whole: Callable,
             convert_column: Callable | None) -> list:
    if _has_none(column):
        return list(map(convert, column))
    return _convert_whole(column, convert_whole, convert_column)


def _convert_whole(column: list, convert_whole: Callable, convert_column: Callable | None
                   ) -> list:
    """`_convert` of a column holding no None."""
    if convert_column is not None:
        try:
            return convert_column(column)
        except Exception:  # noqa: BLE001, S110 - value by value below: same result or refusal
            pass
    return list(map(convert_whole, column))


def _distinct(key_columns: list[list], count: int) -> bool:
    """Whether the COUNT keys these columns hold are all different, as Python compares them
    (so not for keys that can hold NaN: see `key_slot`). A last column whose values are all
    different already says so (a table's only key column, or a clustering column that tells
    rows apart): one set of values instead of a tuple per key, about a fifth of the time over
    10k int or text keys (half for UUIDs, whose hash is Python code); when that column repeats,
    the tuples are still needed and the check costs about 15% more than tuples alone."""
    if len(set(key_columns[-1])) == count:
        return True
    return len(key_columns) > 1 and len(set(zip(*key_columns, strict=True))) == count


_NAN = ("NaN",)  # stands for a NaN float in a dict key (a tuple: no column value is one)


def key_slot(key: tuple) -> tuple:
    """The `Target.images` key of a row key. Python's nan != nan, but Cassandra (Float.compare)
    and the destinations' keys treat NaN as equal to NaN: without this, two images of one row
    with a NaN float key column were both kept, and PostgreSQL's INSERT ... ON CONFLICT failed
    the whole batch (CardinalityViolation), again on every replay. A list (a vector key, which
    PostgreSQL writes as an array) is no dict key: it stands as a tuple of its slots."""
    for value in key:
        if value != value or value.__class__ is list:  # noqa: PLR0124 - NaN, or a list
            return tuple(map(_slot_of, key))
    return key


def _slot_of(value: Any) -> Any:
    if value.__class__ is list:
        return (list, *map(_slot_of, value))  # `list` first: no other value's slot is like it
    return _NAN if value != value else value  # noqa: PLR0124


class Gatherer:
    rejected: type[RejectedValueError] = RejectedValueError

    def __init__(self, layout_of: Callable[[str, str], Any]) -> None:
        self.layout_of = layout_of
        self.targets: dict[str, Target] = {}
        self.cached: dict[tuple[str, str, bool], Target] = {}
        # Per target written, its source columns (node, segment, offset), while each set held
        # every operation of its target; None once one did not, or a range delete came (its
        # position may be in no written row): `positions` then reads the operations again.
        # Keyed by id(): the target is kept in the entry, so no other takes its id meanwhile.
        self._written_sources: dict[int, tuple[Target, list, list, list]] | None = {}

    # --- to implement --------------------------------------------------------------------

    def flush(self, target: Target) -> None:
        raise NotImplementedError

    def range_delete(self, op: RangeDelete) -> None:
        raise NotImplementedError

    # --- shared --------------------------------------------------------------------------

    def wrote(self, target: Target, columns: list[list]) -> None:
        """Note COLUMNS, as TARGET's `columns()` gave them, as written (for `positions`)."""
        if self._written_sources is not None:
            if target.every_operation:  # (again for a target written again: the same rows)
                self._written_sources[id(target)] = (target, columns[-3], columns[-2],
                                                     columns[-1])
            else:
                self._written_sources = None

    def positions(self, ops: list[RowOp]) -> dict[str, Position]:
        """`highest_positions(OPS)`, the batch this gatherer applied: from the source columns
        it wrote where those hold every operation (1.2-1.5 ms per 10k instead of 3.5-4.6 for
        another pass over the operations). Where the targets noted do not hold exactly as many
        rows as OPS (a write path that notes nothing), from OPS."""
        written = self._written_sources
        if written is None or sum(len(nodes) for _, nodes, _, _ in written.values()) != len(ops):
            return highest_positions(ops)
        return highest_of_columns((n, s, o) for _, n, s, o in written.values())

    def apply(self, ops: Iterable[RowOp]) -> None:
        ops = ops if isinstance(ops, list) else list(ops)
        if ops and _ROW_KINDS.issuperset(map(type, ops)) and \
                len(set(map(_target_of, ops))) == 1:
            # The usual batch: row operations of one table, queued at once (C-level loops).
            self.row(ops[0])
            self.cached[_target_of(ops[0])].pending.extend(ops[1:])
            self.flush_all()
            return
        cached, targets = self.cached, self.targets
        for op in ops:
            kind = op.__class__
            if kind is RowUpsert or kind is RowDelete:  # the hot path: `row`, inlined
                target = cached.get((op.keyspace, op.table, op.static))
                if target is not None and target.name in targets:
                    target.pending.append(op)
                else:
                    self.row(op)
            elif isinstance(op, RangeDelete):
                self._written_sources = None
                self.range_delete(op)
            elif isinstance(op, RowUpsert | RowDelete):
                self.row(op)
            else:
                raise TypeError(f"not a row operation: {type(op).__name__}")
        self.flush_all()

    def flush_all(self) -> None:
        for target in self.targets.values():
            target.convert_pending()  # every refusal before the first write
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
            found.settle = self.settle
        return found

    def row(self, op: RowUpsert | RowDelete) -> None:
        cache_key = (op.keyspace, op.table, op.static)
        target = self.cached.get(cache_key)
        if target is None or target.name not in self.targets:  # new, or flushed since
            target = self.cached[cache_key] = self.target(
                self.layout_of(op.keyspace, op.table), op.static)
        target.pending.append(op)

    def settle(self, target: Target) -> None:
        """Convert TARGET's pending operations column by column and gather them. Any refusal
        is redone row by row in operation order (`_row_slowly`), so the error raised is the
        one of the first refused operation, naming its column and key."""
        ops, target.pending = target.pending, []
        try:
            batch = self._columns(target, ops)
        except Exception:  # noqa: BLE001 - redone slowly to name the column, then raised
            for op in ops:
                self._row_slowly(target, op)
            raise
        if target._batch is None and not target._images and not target.nan_keys and \
                _distinct(batch[:len(target.key)], len(ops)):  # noqa: SLF001
            target._batch = batch  # noqa: SLF001 - distinct keys: every row is an image
            return
        target.images  # noqa: B018 - earlier batch first, in order
        target.add_columns(batch)

    def _columns(self, target: Target, ops: list[RowUpsert | RowDelete]) -> list[list]:
        """OPS as converted columns (see Target._batch); raises on any refusal."""
        upsert = list(map(isinstance, ops, repeat(RowUpsert)))
        if all(upsert):
            values = list(map(_values_of, ops))
        else:
            values = [op.values if u else _NO_VALUES for op, u in zip(ops, upsert, strict=True)]
        if not target.value_name_set.issuperset(set().union(*values)):
            raise ValueRefused("unknown column")
        keys = list(map(_key_of, ops))
        key_columns = _columns(keys, target.key_names)
        # Checked before conversion, once: converters keep None, and only None, as None
        # (tests/connectors/test_type_roundtrip.py holds them to it).
        if any(map(_has_none, key_columns)):
            raise ValueRefused("NULL key")
        for i, _, convert_whole, convert_column in target.key_plan:
            key_columns[i] = _convert_whole(key_columns[i], convert_whole, convert_column)
        value_columns = _columns(values, target.value_names)
        for i, *converters in target.value_plan:
            value_columns[i] = _convert(value_columns[i], *converters)
        return key_columns + value_columns + [list(map(_version_of, ops)),
                                              list(map(not_, upsert)),
                                              list(map(_source_of, ops))]

    def _row_slowly(self, target: Target, op: RowUpsert | RowDelete) -> tuple[tuple, Any]:
        key = self.convert_key(target.name, target.key, op.key)
        if not isinstance(op, RowUpsert):
            return key, None
        unknown = set(op.values) - target.value_name_set
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
    """Per node, the highest source position among OPS (what a progress row records).

    Rows of the initial load and of TTL expiry have no commit-log position: they record no
    progress (Source.in_commit_log)."""
    ops = ops if isinstance(ops, list) else list(ops)
    # One attribute per pass: a dotted attrgetter ("source.position.offset") walks its path
    # again for every name, about three times slower over a batch.
    sources = list(map(_source_of, ops))
    positions = list(map(_position_of, sources))
    return highest_of_columns([(list(map(_node_of, sources)), list(map(_segment_of, positions)),
                                list(map(_offset_of, positions)))])


def highest_of_columns(columns: Iterable[tuple[list, list, list]]) -> dict[str, Position]:
    """Per node, the highest position in node, segment and offset columns (of operations:
    `highest_positions`; as `Target.columns()` wrote them, only where `every_operation` says
    they hold every operation)."""
    highest: dict[str, Position] = {}
    for nodes, segments, offsets in columns:
        distinct = set(nodes)
        for node in distinct - NOT_IN_COMMIT_LOG:
            if len(distinct) == 1:
                pairs = zip(segments, offsets, strict=True)
            else:
                of_node = list(map(eq, nodes, repeat(node)))
                pairs = zip(compress(segments, of_node), compress(offsets, of_node),
                            strict=True)
            merge_highest(highest, {node: Position(*max(pairs))})
    return highest


def merge_highest(into: dict[str, Position], positions: Mapping[str, Position]) -> None:
    """Per node, keep in INTO the higher of its position and the one in POSITIONS."""
    for node, position in positions.items():
        current = into.get(node)
        if current is None or position > current:
            into[node] = position
