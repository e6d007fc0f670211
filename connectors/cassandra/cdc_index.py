"""The ``CommitLog-<v>-<id>_cdc.idx`` file that tells how much of a cdc_raw segment is durable.

Cassandra (CommitLogSegment.writeCDCIndexFile) truncates and rewrites this file after each
commit-log sync of a segment that holds CDC data: ``<offset>`` while the segment is in use,
``<offset>\\nCOMPLETED`` once it is closed. The offset is the end of the last synced section in the
LOGICAL position space: for a compressed segment it is an uncompressed position, not a file size.

After a restart the replayer writes ``<file length>\\nCOMPLETED`` (CommitLogReplayer
.handleCDCReplayCompletion): a FILE length, which for a compressed segment is not a logical
position at all. That is why a completed index means "read the whole segment, up to its end
marker" (``read_limit`` is None) rather than "read up to offset".

Because the file is truncated before it is written, a reader can find it empty or holding only
part of its text. Those states mean "not readable yet, ask again" and are returned as
``IndexNotReady``, a normal result, not an error. So is a missing file: the .log link is created
with the segment, the index only at the first sync after a CDC write.

One torn state cannot be recognised: digits cut short ("12" of "1234") look like a smaller offset.
Java's FileWriter writes the short text in one call, so this is unlikely; it is also harmless for
reading (a smaller limit only means "less is readable now"), and a consumer that keeps the highest
offset it has seen for a segment in use is immune to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from connectors.cassandra.errors import CdcIndexError

_COMPLETED = b"\nCOMPLETED"
_FULL = re.compile(rb"(\d+)(\nCOMPLETED)?")
_DIGITS = re.compile(rb"\d+")


@dataclass(frozen=True)
class CdcIndex:
    """A fully written index: durable up to ``offset``; ``completed`` once the segment is closed."""

    offset: int
    completed: bool

    @property
    def read_limit(self) -> int | None:
        """The ``limit`` for read_segment: the offset while in use, None once completed."""
        return None if self.completed else self.offset


@dataclass(frozen=True)
class IndexNotReady:
    """The index cannot be used yet (missing, empty, or caught mid-write): retry later."""

    path: str
    reason: str


def parse_cdc_index(content: bytes, path: str = "<cdc index>") -> CdcIndex | IndexNotReady:
    """Parse the bytes of an index file. Raises CdcIndexError for content no write could produce."""
    match = _FULL.fullmatch(content)
    if match is not None:
        return CdcIndex(offset=int(match.group(1)), completed=match.group(2) is not None)
    if not content:
        return IndexNotReady(path, "index file is empty (being rewritten)")
    # "<digits>" then a proper prefix of "\nCOMPLETED" is the completed form caught mid-write.
    digits = _DIGITS.match(content)
    if digits is not None:
        tail = content[digits.end() :]
        if _COMPLETED.startswith(tail):
            return IndexNotReady(path, f"index file caught mid-write: {content!r}")
    raise CdcIndexError(f"{path}: not a CDC index: {content[:80]!r}")


def read_cdc_index(path: str | Path) -> CdcIndex | IndexNotReady:
    """Read and parse an index file; a missing file is IndexNotReady, other I/O errors propagate."""
    try:
        content = Path(path).read_bytes()
    except FileNotFoundError:
        return IndexNotReady(str(path), "index file does not exist yet")
    return parse_cdc_index(content, str(path))
