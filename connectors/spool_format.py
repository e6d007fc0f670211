"""How a spooled batch is stored: a payload that starts with a tag naming its format.

- ``R1``: a batch of `RowUpsert` and `RowDelete` only (what the flow spools almost always), as
  columns: one list per field, one bytes of kinds, pickled. Pickling the items themselves
  stores an object per item and per Source and Position in it: about 17 µs per item to encode
  and 13 to decode, against 7-9 and 8-10 as columns (benchmarks/spool_format.py), paid per
  destination.
- ``P1``: any other batch (range deletes, or a sink's other items), pickled as it is.
- No tag: a frame written before tags existed (a pickle: it starts with pickle's PROTO
  opcode 0x80), read as ``P1``.

A payload with any other start raises `SpoolFormatError`: it was written by a later version
of the pipeline (drain that spool with it) or is not a spool frame. The frames never leave the
process's own disk (connectors/spool.py), which is why pickle is acceptable here.
"""

from __future__ import annotations

import dataclasses
import pickle
from itertools import repeat
from operator import attrgetter
from typing import Any

from connectors.cassandra.events import Position
from operators.row_ops import RowDelete, RowUpsert, Source, source_node_of

__all__ = ["SpoolFormatError", "decode_batch", "encode_batch"]

ROWS = b"R1"
PICKLED = b"P1"
_LEGACY = 0x80  # pickle's PROTO opcode: untagged frames of earlier versions
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_UPSERT, _DELETE = 1, 0

_keyspace, _table, _key = attrgetter("keyspace"), attrgetter("table"), attrgetter("key")
_values, _version, _static = attrgetter("values"), attrgetter("version"), attrgetter("static")
_expires = attrgetter("expires")
_segment = attrgetter("source.position.segment_id")
_offset = attrgetter("source.position.offset")


class SpoolFormatError(ValueError):
    """A spooled payload in no format this version reads."""


# What R1 stores of each class, in order. A field added to one of them (even with a default)
# would not be stored, and would come back as its default: this stops the import instead, so
# such a change comes with a format R2 (and R1 still read as it was).
_R1_FIELDS = {
    RowUpsert: ("keyspace", "table", "key", "values", "version", "source", "static", "expires"),
    RowDelete: ("keyspace", "table", "key", "version", "source", "static"),
    Source: ("node", "position"),
    Position: ("segment_id", "offset"),
}


# R1's columns, in the order encode_batch writes them and _rows reads them back.
_R1_COLUMNS = ("upsert flags", "keyspace", "table", "key", "values", "version", "source node",
               "source segment", "source offset", "static", "expires")


def _check_stored(stored: dict[type, tuple[str, ...]]) -> None:
    for cls, names in stored.items():
        now = tuple(f.name for f in dataclasses.fields(cls))
        if now != names:
            raise TypeError(f"spool format R1 stores {names} of {cls.__name__}, which now has "
                            f"{now}: add a format")


_check_stored(_R1_FIELDS)


def encode_batch(batch: list[Any]) -> bytes:
    """BATCH as a tagged payload (see the module docstring)."""
    kinds = set(map(type, batch))
    if not batch or not kinds <= {RowUpsert, RowDelete}:
        return PICKLED + pickle.dumps(batch, protocol=_PROTOCOL)
    if kinds == {RowUpsert}:
        flags = bytes(repeat(_UPSERT, len(batch)))
        values, expires = list(map(_values, batch)), list(map(_expires, batch))
    else:
        upsert = [type(op) is RowUpsert for op in batch]
        flags = bytes(upsert)
        values = [op.values if up else None for op, up in zip(batch, upsert, strict=True)]
        expires = [op.expires if up else None for op, up in zip(batch, upsert, strict=True)]
    columns = (flags, list(map(_keyspace, batch)), list(map(_table, batch)),
               list(map(_key, batch)), values, list(map(_version, batch)),
               list(map(source_node_of, batch)), list(map(_segment, batch)),
               list(map(_offset, batch)),
               list(map(_static, batch)), expires)
    return ROWS + pickle.dumps(columns, protocol=_PROTOCOL)


def decode_batch(payload: bytes) -> list[Any]:
    """The batch encode_batch gave PAYLOAD for; raises SpoolFormatError for an unknown tag."""
    tag = payload[:2]
    if tag == ROWS:
        return _rows(pickle.loads(payload[2:]))  # noqa: S301 - the process's own frames
    if tag == PICKLED:
        return pickle.loads(payload[2:])  # noqa: S301
    if payload[:1] == bytes([_LEGACY]):
        return pickle.loads(payload)  # noqa: S301
    raise SpoolFormatError(
        f"a spooled batch starts with {payload[:2]!r}, which is no format this version reads "
        "(R1, P1 or an untagged pickle): was the spool written by a later version?")


def _rows(columns: tuple) -> list[RowUpsert | RowDelete]:
    if len(columns) != len(_R1_COLUMNS) or len({len(column) for column in columns}) != 1 or \
            not set(columns[0]) <= {_UPSERT, _DELETE}:
        raise SpoolFormatError("an R1 spooled batch whose columns do not match (count, "
                               "lengths or kinds): it was not written by this format")
    flags, keyspaces, tables, keys, values, versions, nodes, segments, offsets, statics, \
        expires = columns
    sources = list(map(Source, nodes, map(Position, segments, offsets)))
    if _DELETE not in flags:
        return list(map(RowUpsert, keyspaces, tables, keys, values, versions, sources, statics,
                        expires))
    return [RowUpsert(ks, t, k, v, version, s, static, e) if flag == _UPSERT
            else RowDelete(ks, t, k, version, s, static)
            for flag, ks, t, k, v, version, s, static, e in zip(
                flags, keyspaces, tables, keys, values, versions, sources, statics, expires,
                strict=True)]
