"""The dead-letter branch's sink: what could not be captured or decoded, kept whole, as JSON lines.

Each worker appends to its own file ``<directory>/dead-letter-<worker>.jsonl`` and fsyncs every
batch, so a record is on disk before Bytewax can consider its epoch done. After a crash the
replayed epoch may write a record again (at-least-once): each line carries the record's origin
(node, segment, offset) so duplicates are recognisable. Raw bytes are base64; nothing is
dropped, including the bytes that made the record.

Dead letters are taken before masking, so they hold clear data (whole events, keys, raw
mutations): the directory is made for the owner only (0700) and every file is the owner's only
(0600, an existing one too), as the spools are.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import os
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.private_files import open_private_append


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, UUID | Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)


def to_line(record: Any) -> bytes:
    """One JSON line: the record's type and every field (raw bytes in base64)."""
    return orjson.dumps({"type": type(record).__name__, **_plain(record)}) + b"\n"


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
