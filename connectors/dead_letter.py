"""The dead-letter branch's sink: what could not be captured or decoded, kept whole, as JSON lines.

Each worker appends to its own file ``<directory>/dead-letter-<worker>.jsonl`` and fsyncs every
batch, so a record is on disk before Bytewax can consider its epoch done. After a crash the
replayed epoch may write a record again (at-least-once): each line carries the record's origin
(node, segment, offset) so duplicates are recognisable. Raw bytes are base64, and every value
JSON has no form for goes as a one-key object naming it (`_plain`); nothing is dropped,
including the bytes that made the record. A line a crash left unfinished is ended before the
next one (connectors/private_files.py).

Dead letters are taken before masking, so they hold clear data (whole events, keys, raw
mutations): the directory is made for the owner only (0700) and every file is the owner's only
(0600, an existing one too), as the spools are.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import enum
import math
import os
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.private_files import open_private_append

# orjson writes integers within these bounds; a varint beyond them goes as text.
_JSON_INT = (-2**63, 2**64 - 1)


def _plain(value: Any) -> Any:
    """VALUE as JSON can hold it without losing what it was: what JSON has no form for goes as
    a one-key object naming it (bytes in base64, an integer beyond 64 bits, a float NaN or
    infinity, a decimal, a set, a map whose keys are not all text, as [key, value] pairs,
    dates and times as ISO text, text holding lone surrogates as its bytes); anything else
    unknown as {"repr": ...}. A map of text keys is written as it is: a key such as "decimal"
    in it reads like a tag (its record's type and field say which it is)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if _is_utf8(value):
            return value
        # Lone surrogates: JSON cannot hold them, their bytes can.
        return {"text_surrogates_base64": base64.b64encode(
            value.encode("utf-8", "surrogatepass")).decode()}
    if isinstance(value, int):
        return value if _JSON_INT[0] <= value <= _JSON_INT[1] else {"int": str(value)}
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}  # nan, inf, -inf
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, UUID | Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return {type(value).__name__: value.isoformat()}
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple: its fields
        return {name: _plain(v) for name, v in zip(value._fields, value, strict=True)}
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and _is_utf8(k) for k in value):
            return {k: _plain(v) for k, v in value.items()}
        return {"map": [[_plain(k), _plain(v)] for k, v in value.items()]}
    if isinstance(value, AbstractSet):
        return {"set": [_plain(v) for v in value]}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return {"repr": repr(value)}


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def to_line(record: Any) -> bytes:
    """One JSON line: the record's type and every field (see `_plain`). A record JSON still
    cannot take (text that is not valid Unicode, say) goes as its repr, with the reason: a
    dead letter that failed to encode must not stop the flow, again at every replay."""
    kind = type(record).__name__
    try:
        return orjson.dumps({"type": kind, **_plain(record)}) + b"\n"
    except (TypeError, ValueError) as error:  # orjson.JSONEncodeError is a TypeError
        return orjson.dumps({"type": kind, "unencodable": type(error).__name__,
                             "repr": repr(record).encode("utf-8", "backslashreplace")
                             .decode("utf-8")}) + b"\n"


class DeadLetterSink(DynamicSink):
    def __init__(self, directory: Path) -> None:
        self._directory = Path(directory)

    def build(self, step_id: str, worker_index: int, worker_count: int):
        return _DeadLetterFile(self._directory / f"dead-letter-{worker_index}.jsonl")


class _DeadLetterFile(StatelessSinkPartition):
    def __init__(self, path: Path) -> None:
        self._file = open_private_append(path)

    def write_batch(self, items: list) -> None:
        self._file.write(b"".join(to_line(item) for item in items))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
