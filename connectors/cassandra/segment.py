"""Framing layer of Cassandra commit-log segments: sync sections and entries, as records.

What this reads (traced in Cassandra 5.0's CommitLogSegment, CompressedSegment,
CommitLogSegmentReader, CommitLogReader and CommitLog.add; all integers big-endian)::

    header        see descriptor.py
    sync section  int32 nextMarker | int32 crc(id low, id high, this marker's FILE position)
                  uncompressed: entries, up to nextMarker
                  compressed:   int32 uncompressedLength | one compressed block up to nextMarker
    entry         int32 size | int32 crc32(size) | size bytes of mutation | int32 crc
                  (the last CRC continues the first over the mutation bytes)

The end of a segment is a zero marker (0, 0), the end of the file, or fewer than 8 bytes left.

Two position spaces. Every position this module reports (``Entry.start``/``end``,
``ReadError.offset``/``resume_at``, ``SyncSection.offset``/``start``/``end``) and every position
it accepts (``start``, ``limit``) is LOGICAL: the offset in the segment's uncompressed buffer,
which is the space Cassandra itself uses for CommitLogPosition and for the _cdc.idx offset
(``writeCDCIndexFile(descriptor, sectionEnd, ...)`` is given a buffer position). For an
uncompressed segment logical and file positions are equal. For a compressed segment they only
agree up to the end of the header: each section takes 8 logical bytes for its marker plus its
uncompressed length, while in the file it takes 12 bytes plus the compressed block. Markers and
their CRCs use FILE positions. ``ReadError.file_offset`` gives the file position where useful.

Positions are stable: the same bytes always give the same positions, and ``read_segment(...,
start=entry.end)`` continues exactly after that entry (``start=error.resume_at`` exactly after a
skipped region), so (segment id, position) is a durable cursor.

The ``limit`` is the _cdc.idx offset of a segment still in use. Nothing at or after it is read:
for an uncompressed segment no file byte at or beyond it; for a compressed one no section whose
logical start is at or beyond it. A section that would cross it (only possible with an
inconsistent index) is left for a later read, not reported. The rest of a file still being
written (zeros of an mmap segment, a half-written compressed section, unsynced entries) is
therefore never seen. With ``limit=None`` (the index says COMPLETED, see cdc_index.py) the
segment is read to its end marker.

Bad bytes become ReadError records, never exceptions; what can be recovered:

- entry CRC mismatch with a good size CRC: the entry's extent is trustworthy, so only that
  entry is skipped (error record with its bytes) and the next entry is read.
- size CRC mismatch, size < 10, an entry running past its section, non-zero bytes after a zero
  size: the rest of the section cannot be split into entries; it is reported as one record and
  reading resumes at the next sync marker, whose position the (intact) section marker gave
  (unless, in an uncompressed segment, the marker itself is suspect: see below).
- undecodable compressed block: reported with the block; reading resumes at the next section.
  (The uncompressed length that places later sections in logical space is not covered by any
  CRC; it is the one unprotected field we must trust to go on.)
- bad marker CRC, or a marker pointing backwards, in an UNCOMPRESSED segment: the marker cannot
  tell where its section ends, but entries delimit themselves: reading goes on entry by entry,
  each checked by its own CRCs, and at each entry boundary looks for a valid marker for that
  position (its CRC binds it to the position), then continues the chain from there. If an
  entry fails in that mode there is no safe way forward: the rest is one terminal record.
- a marker's next-position field is NOT covered by its CRC. In an uncompressed segment, when
  entries disagree with it (a size-checked entry runs past it, or a valid marker for its own
  position turns up where an entry should be) the marker is reported and reading goes on as
  above. (Only after such a disagreement are boundaries searched for markers: a blind search
  could mistake an entry header for a marker, with odds of 2^-32 per entry.)
- bad marker in a COMPRESSED segment: the block length is only known from the marker, so the
  rest of the segment is unreadable: terminal record.
- header CRC mismatch, file name and header disagreeing, a truncated file, a zero end marker
  before the index offset: terminal record.

A terminal record has ``resume_at=None``. Nothing is skipped without a record, except zero padding.

Refusals are raised instead (errors.py): an encrypted segment, an unknown descriptor version or
compressor, a compressor whose Python package is missing.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from connectors.cassandra.compression import Decompressor, decompressor_for
from connectors.cassandra.descriptor import (
    SUPPORTED_VERSIONS,
    SegmentDescriptor,
    checksum_int,
    id_checksum,
    parse_header,
    parse_segment_file_name,
)
from connectors.cassandra.errors import (
    CodecError,
    CodecUnavailableError,
    DecompressionError,
    EncryptedSegmentError,
    HeaderError,
    UnsupportedSegmentError,
)

MARKER_SIZE = 8
COMPRESSED_SECTION_HEADER_SIZE = MARKER_SIZE + 4
ENTRY_OVERHEAD = 12
# CommitLogReader refuses smaller sizes so that garbage cannot pass the size CRC by luck
# (CASSANDRA-2128).
MIN_MUTATION_SIZE = 10

_INT = struct.Struct(">i")
_UINT = struct.Struct(">I")
_MARKER = struct.Struct(">iI")
_ZERO_MARKER = bytes(MARKER_SIZE)
_FIXED_HEADER = struct.Struct(">iqH")
_NOT_MISPLACED = object()


class ErrorKind(StrEnum):
    HEADER_TRUNCATED = "header_truncated"
    HEADER_CRC = "header_crc"
    HEADER_MALFORMED = "header_malformed"
    SEGMENT_ID_MISMATCH = "segment_id_mismatch"
    MARKER_CRC = "marker_crc"
    MARKER_POSITION = "marker_position"
    SECTION_LENGTH = "section_length"
    PREMATURE_END = "premature_end"
    TRUNCATED = "truncated"
    DECOMPRESSION = "decompression"
    ENTRY_SIZE_CRC = "entry_size_crc"
    ENTRY_SIZE_INVALID = "entry_size_invalid"
    ENTRY_OVERRUN = "entry_overrun"
    ENTRY_CRC = "entry_crc"
    TRAILING_BYTES = "trailing_bytes"


_HEADER_KINDS = {
    "truncated": ErrorKind.HEADER_TRUNCATED,
    "crc": ErrorKind.HEADER_CRC,
    "malformed": ErrorKind.HEADER_MALFORMED,
}


@dataclass(frozen=True)
class Entry:
    """One CRC-verified commit-log entry. ``end`` is the position to resume after it."""

    segment_id: int
    version: int  # descriptor version: 7 -> messaging 12, 8 -> messaging 13
    start: int
    end: int
    mutation: bytes = field(repr=False)


@dataclass(frozen=True)
class ReadError:
    """Bytes not readable as framing; ``resume_at`` is None when nothing after them is readable."""

    segment_path: str
    segment_id: int | None
    offset: int
    file_offset: int
    kind: ErrorKind
    reason: str
    raw: bytes = field(repr=False)
    resume_at: int | None


@dataclass(frozen=True)
class SyncSection:
    """A sync section whose marker CRC checked out (only from scan_sections)."""

    segment_id: int
    offset: int  # logical position of the marker
    file_offset: int
    start: int  # logical position of the first entry
    end: int  # logical position of the next marker
    file_end: int  # file position of the next marker
    compressed_length: int | None


Record = Entry | ReadError


def read_descriptor(path: str | Path) -> SegmentDescriptor:
    """Read, CRC-check and vet a segment header. Raises HeaderError or a SegmentRefusedError."""
    path = Path(path)
    with path.open("rb") as f:
        descriptor = parse_header(_read_header_bytes(f))
    _decompressor(path, descriptor)
    return descriptor


def read_segment(
    path: str | Path, *, start: int | None = None, limit: int | None = None
) -> Iterator[Record]:
    """Entries and error records of a segment, in file order.

    start: a position previously returned as ``Entry.end`` or ``ReadError.resume_at`` (None or
        anything up to the end of the header: from the beginning). Records before it are not
        yielded; ValueError if it falls inside an entry or a marker.
    limit: the _cdc.idx offset while the segment is in use; None once the index says COMPLETED.

    The header is read and judged now: refusals (encryption, unknown version or compressor,
    missing codec package) raise here. Everything else arrives as records while iterating.
    """
    if start is not None and start < 0:
        raise ValueError(f"start must be a position >= 0, got {start}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be a position >= 0, got {limit}")
    path = Path(path)
    with path.open("rb") as f:
        header = _read_header_bytes(f)
    try:
        descriptor = parse_header(header)
    except HeaderError as exc:
        return iter([_header_error(path, exc, header)])
    decompress = _decompressor(path, descriptor)
    mismatch = _file_name_mismatch(path, descriptor)
    if mismatch is not None:
        return iter([mismatch])
    return _SegmentScan(path, descriptor, decompress, start, limit, sections=False).records()


def scan_sections(
    path: str | Path, *, limit: int | None = None
) -> Iterator[SyncSection | ReadError]:
    """The sync sections of a segment (and error records), without entries: for diagnostics."""
    path = Path(path)
    with path.open("rb") as f:
        header = _read_header_bytes(f)
    try:
        descriptor = parse_header(header)
    except HeaderError as exc:
        yield _header_error(path, exc, header)
        return
    decompress = _decompressor(path, descriptor)
    scan = _SegmentScan(path, descriptor, decompress, None, limit, sections=True)
    for record in scan.records():
        if not isinstance(record, Entry):
            yield record


def _read_header_bytes(f: BinaryIO) -> bytes:
    # Read exactly the header (fixed part, then the announced parameters and CRC), nothing more.
    fixed = f.read(_FIXED_HEADER.size)
    if len(fixed) < _FIXED_HEADER.size:
        return fixed
    param_len = _FIXED_HEADER.unpack(fixed)[2]
    return fixed + f.read(param_len + 4)


def _header_error(path: Path, exc: HeaderError, header: bytes) -> ReadError:
    named = parse_segment_file_name(path.name)
    return ReadError(
        segment_path=str(path),
        segment_id=named[1] if named else None,
        offset=0,
        file_offset=0,
        kind=_HEADER_KINDS[exc.kind],
        reason=f"unreadable segment header: {exc.reason}",
        raw=header,
        resume_at=None,
    )


def _decompressor(path: Path, descriptor: SegmentDescriptor) -> Decompressor | None:
    """Refuse what cannot be read, raising; else the section decoder (None: not compressed)."""
    if descriptor.encrypted:
        raise EncryptedSegmentError(
            str(path),
            f"it is encrypted (header names {', '.join(descriptor.encryption_keys)}); "
            "reading it needs the node's "
            "keystore, which this reader does not support",
        )
    if descriptor.version not in SUPPORTED_VERSIONS:
        raise UnsupportedSegmentError(
            str(path),
            f"descriptor version {descriptor.version} (supported: {sorted(SUPPORTED_VERSIONS)})",
        )
    if descriptor.compression is None:
        return None
    try:
        return decompressor_for(descriptor.compression.class_name)
    except CodecError as exc:
        error = CodecUnavailableError if exc.missing_package else UnsupportedSegmentError
        raise error(str(path), exc.reason) from exc


def _file_name_mismatch(path: Path, descriptor: SegmentDescriptor) -> ReadError | None:
    # Cassandra names the file from the descriptor; a disagreement means a renamed or damaged file,
    # and positions keyed by either id would be wrong. Names that are not CommitLog-<v>-<id>.log
    # (copies, tests) are not judged.
    named = parse_segment_file_name(path.name)
    if named is None or named == (descriptor.version, descriptor.segment_id):
        return None
    return ReadError(
        segment_path=str(path),
        segment_id=descriptor.segment_id,
        offset=0,
        file_offset=0,
        kind=ErrorKind.SEGMENT_ID_MISMATCH,
        reason=(
            f"file name says version {named[0]} id {named[1]}, "
            f"header says version {descriptor.version} "
            f"id {descriptor.segment_id}"
        ),
        raw=b"",
        resume_at=None,
    )


@dataclass(frozen=True)
class _Problem:
    """Why an entry frame could not be read. kind None: clean zero padding, not an error."""

    kind: ErrorKind | None
    reason: str


@dataclass(frozen=True)
class _Frame:
    length: int
    mutation: bytes
    crc_ok: bool


@dataclass(frozen=True, slots=True)
class _Stopped:
    """Where a walk with stop_at_problem met a frame it does not read on its own."""

    position: int


def _resumes_at(data: bytes, end: int) -> bool:
    """Whether a read resumed inside a section may start walking at its resume position, DATA
    (the section from there, ending at data[end]): when a whole entry frame starts there, as
    at the entry boundary an earlier read of these bytes gave. Walking the entries before it
    again made every poll of a large section cost the section up to there (quadratic: 9 s
    for one section of 60k entries polled 1000 at a time, 0.6 s in one poll). Otherwise (a
    position that is no boundary, or a damaged entry there) the section is walked from its
    start, which names the problem as before. Both of the frame's CRCs must check out: a
    position inside an entry would need its bytes to pass both by chance."""
    frame = _parse_frame(data, 0, end)
    return isinstance(frame, _Frame) and frame.crc_ok


def _parse_frame(data: bytes, i: int, end: int) -> _Frame | _Problem:
    """The entry frame at data[i:], in a section ending at data[end].

    ``data`` is shorter than ``end`` when the file is truncated.
    """
    available = len(data)
    if end - i < 8:
        # Too short for a frame: acceptable only as zero padding (CommitLogReader stops there too).
        tail = data[i:end]
        if len(tail) < end - i:
            return _Problem(
                ErrorKind.TRUNCATED,
                f"file ends {available - i} bytes into the last {end - i} of a section",
            )
        if not any(tail):
            return _Problem(None, "zero padding")
        return _Problem(
            ErrorKind.TRAILING_BYTES, f"{end - i} bytes left in the section are not an entry"
        )
    if available - i < 8:
        return _Problem(
            ErrorKind.TRUNCATED, f"file ends {available - i} bytes into an entry header"
        )
    (size,) = _INT.unpack_from(data, i)
    if size == 0:
        # Size 0 is how Cassandra's reader recognises the end; the rest must be zeros.
        tail = data[i:end]
        if any(tail):
            return _Problem(ErrorKind.ENTRY_SIZE_INVALID, "entry size 0 followed by non-zero bytes")
        if len(tail) < end - i:
            return _Problem(ErrorKind.TRUNCATED, "file ends inside the zero padding of a section")
        return _Problem(None, "zero padding")
    size_crc = checksum_int(0, size)
    (stored_size_crc,) = _UINT.unpack_from(data, i + 4)
    if stored_size_crc != size_crc:
        return _Problem(
            ErrorKind.ENTRY_SIZE_CRC,
            f"size CRC mismatch (size field {size}, stored crc {stored_size_crc:#010x})",
        )
    if size < MIN_MUTATION_SIZE:
        return _Problem(ErrorKind.ENTRY_SIZE_INVALID, f"entry size {size} < {MIN_MUTATION_SIZE}")
    length = ENTRY_OVERHEAD + size
    if i + length > end:
        return _Problem(
            ErrorKind.ENTRY_OVERRUN,
            f"entry of {size} mutation bytes runs {i + length - end} bytes past the section end",
        )
    if i + length > available:
        return _Problem(ErrorKind.TRUNCATED, f"file ends inside an entry of {size} mutation bytes")
    mutation = bytes(data[i + 8 : i + 8 + size])
    (stored,) = _UINT.unpack_from(data, i + 8 + size)
    return _Frame(length, mutation, zlib.crc32(mutation, size_crc) == stored)


def _entry_header_ok(window: bytes) -> bool:
    """An entry's size and size CRC, checked: the frame at least starts like a real entry."""
    if len(window) < 8:
        return False
    size, stored = _MARKER.unpack(window)
    return size >= MIN_MUTATION_SIZE and checksum_int(0, size) == stored


class _SegmentScan:
    """One pass over one segment; owns the open file and the position bookkeeping."""

    def __init__(
        self,
        path: Path,
        descriptor: SegmentDescriptor,
        decompress: Decompressor | None,
        start: int | None,
        limit: int | None,
        *,
        sections: bool,
    ) -> None:
        self.path = path
        self.descriptor = descriptor
        self.decompress = decompress
        self.start = max(start or 0, descriptor.header_length)
        self.limit = limit
        self.emit_sections = sections
        self.id_crc = id_checksum(descriptor.segment_id)
        self.file: BinaryIO | None = None
        self.size = 0

    def records(self) -> Iterator[Record | SyncSection]:
        with self.path.open("rb") as f:
            self.file = f
            self.size = os.fstat(f.fileno()).st_size
            if self.decompress is None:
                yield from self._uncompressed()
            else:
                yield from self._compressed()

    # -- reading -------------------------------------------------------------------------------

    def _read(self, pos: int, n: int) -> bytes:
        assert self.file is not None
        if self.limit is not None and self.decompress is None:
            n = min(n, self.limit - pos)  # never touch a byte at or past the durable offset
        if n <= 0:
            return b""
        self.file.seek(pos)
        return self.file.read(n)

    def _marker_ok(self, file_pos: int, raw: bytes) -> bool:
        return len(raw) >= MARKER_SIZE and _MARKER.unpack_from(raw)[1] == checksum_int(
            self.id_crc, file_pos
        )

    def _check_start(self, marker_pos: int) -> None:
        if marker_pos < self.start < marker_pos + MARKER_SIZE:
            raise ValueError(
                f"resume position {self.start} is inside the sync marker at {marker_pos} "
                f"of {self.path}"
            )

    def _error(
        self,
        kind: ErrorKind,
        offset: int,
        reason: str,
        raw: bytes,
        resume_at: int | None,
        file_offset: int | None = None,
    ) -> Iterator[ReadError]:
        # Errors before the resume position were reported by the read that produced that position.
        if offset >= self.start:
            yield ReadError(
                segment_path=str(self.path),
                segment_id=self.descriptor.segment_id,
                offset=offset,
                file_offset=offset if file_offset is None else file_offset,
                kind=kind,
                reason=reason,
                raw=raw,
                resume_at=resume_at,
            )

    def _section(
        self, offset: int, file_offset: int, end: int, file_end: int, compressed: int | None
    ) -> Iterator[SyncSection]:
        if self.emit_sections:
            yield SyncSection(
                self.descriptor.segment_id,
                offset,
                file_offset,
                offset + MARKER_SIZE,
                end,
                file_end,
                compressed,
            )

    # -- uncompressed segments: logical == file positions ---------------------------------------

    def _uncompressed(self) -> Iterator[Record | SyncSection]:
        pos: int | None = self.descriptor.header_length
        while pos is not None:
            pos = yield from self._uncompressed_section(pos)

    def _uncompressed_section(self, pos: int) -> Generator[Record | SyncSection, None, int | None]:
        """Read the section whose marker is at pos; return the next marker position or None."""
        if self.limit is not None and pos + MARKER_SIZE > self.limit:
            return None  # everything durable has been read
        self._check_start(pos)
        raw = self._read(pos, MARKER_SIZE)
        if len(raw) < MARKER_SIZE:
            if self.limit is None and not any(raw):
                return None  # no room left for a marker: the segment ends (CommitLogSegmentReader)
            yield from self._error(
                ErrorKind.TRUNCATED,
                pos,
                f"file ends at {self.size}, inside or before the sync marker at {pos}",
                raw,
                None,
            )
            return None
        next_pos, _ = _MARKER.unpack(raw)
        if not self._marker_ok(pos, raw):
            if raw == _ZERO_MARKER:
                return (yield from self._zero_marker(pos))
            yield from self._error(
                ErrorKind.MARKER_CRC,
                pos,
                "sync marker CRC mismatch; continuing entry by entry",
                raw,
                pos + MARKER_SIZE,
            )
            return (yield from self._resync(pos + MARKER_SIZE))
        if next_pos < pos + MARKER_SIZE:
            # The CRC covers the marker's own position, not nextMarker: it does not vouch for it.
            yield from self._error(
                ErrorKind.MARKER_POSITION,
                pos,
                f"sync marker points back to {next_pos}; continuing entry by entry",
                raw,
                pos + MARKER_SIZE,
            )
            return (yield from self._resync(pos + MARKER_SIZE))
        if self.limit is not None and next_pos > self.limit:
            return None  # section not durable according to the index: later
        yield from self._section(pos, pos, next_pos, next_pos, None)
        if next_pos <= self.start and self._marker_at(next_pos):
            return next_pos  # wholly before the resume position: not even read
        begin = pos + MARKER_SIZE
        if begin < self.start < next_pos and self._marker_at(next_pos):
            # Resuming inside the section: from the resume position (see _resumes_at), while
            # every frame from there checks out. At the first that does not, the section is
            # walked again from its start (the entries handed out are not repeated: the
            # resume position moves up to the problem), so a damaged nextMarker field or a
            # damaged entry is handled as a read from the section's start handles it.
            content = self._read(self.start, next_pos - self.start)
            if _resumes_at(content, next_pos - self.start):
                stopped = yield from self._walk(content, self.start, next_pos, file_offset=None,
                                                find_markers=False, stop_at_problem=True)
                if not isinstance(stopped, _Stopped):
                    return stopped
                self.start = stopped.position
        content = self._read(begin, next_pos - begin)
        return (
            yield from self._walk(
                content,
                begin,
                next_pos,
                file_offset=None,
                find_markers=False,
                marker_pos=pos,
            )
        )

    def _marker_at(self, pos: int) -> bool:
        """Whether a sync marker checks out at POS (or the segment ends there). A marker's CRC
        does not cover its nextMarker field, so a section is skipped on that field's word only
        when the marker it points at checks out: a damaged one pointing into an entry made a
        resumed read skip to there, take its errors for ones already reported (they lie before
        the resume position) and lose the rest of the segment without a record. Otherwise the
        section is walked entry by entry, as the first read did."""
        raw = self._read(pos, MARKER_SIZE)
        if len(raw) < MARKER_SIZE:
            return not any(raw)  # no room for a marker: the segment ends
        return raw == _ZERO_MARKER or self._marker_ok(pos, raw)

    def _zero_marker(self, pos: int) -> Generator[ReadError, None, None]:
        # (0, 0) ends a segment; the index never points past the last marker, so one below the
        # index offset means the durable bytes are not there.
        if self.limit is not None and pos < self.limit:
            yield from self._error(
                ErrorKind.PREMATURE_END,
                pos,
                f"end-of-segment marker at {pos} but the CDC index says data is durable "
                f"up to {self.limit}",
                _ZERO_MARKER,
                None,
            )
        return None

    def _resync(self, pos: int) -> Generator[Record, None, int | None]:
        bound = self.limit if self.limit is not None else self.size
        content = self._read(pos, bound - pos)
        return (yield from self._walk(content, pos, bound, file_offset=None, find_markers=True))

    # -- compressed segments ---------------------------------------------------------------------

    def _compressed(self) -> Iterator[Record | SyncSection]:
        step: tuple[int, int] | None = (
            self.descriptor.header_length,
            self.descriptor.header_length,
        )
        while step is not None:
            step = yield from self._compressed_section(*step)

    def _compressed_section(
        self, pos: int, logical: int
    ) -> Generator[Record | SyncSection, None, tuple[int, int] | None]:
        """Read the section whose marker is at file position pos (logical position ``logical``)."""
        assert self.decompress is not None
        if self.limit is not None and logical + MARKER_SIZE > self.limit:
            return None
        self._check_start(logical)
        head = self._read(pos, COMPRESSED_SECTION_HEADER_SIZE)

        def fail(
            kind: ErrorKind, reason: str, raw: bytes, resume_at: int | None = None
        ) -> Iterator[ReadError]:
            return self._error(kind, logical, reason, raw, resume_at, file_offset=pos)

        if not head and self.limit is None:
            return None  # compressed files simply end after their last section
        if head[:MARKER_SIZE] == _ZERO_MARKER:
            return (yield from self._zero_marker(logical))
        if len(head) < COMPRESSED_SECTION_HEADER_SIZE:
            yield from fail(
                ErrorKind.TRUNCATED,
                f"file ends at {self.size}, inside the section header at file {pos}",
                head,
            )
            return None
        if not self._marker_ok(pos, head):
            yield from fail(
                ErrorKind.MARKER_CRC,
                f"sync marker CRC mismatch at file position {pos}; a compressed section's "
                "extent is only known "
                "from its marker, so the rest of the segment cannot be read",
                head,
            )
            return None
        next_pos, _ = _MARKER.unpack_from(head)
        (length,) = _INT.unpack_from(head, MARKER_SIZE)
        if next_pos < pos + COMPRESSED_SECTION_HEADER_SIZE or length < 0:
            kind = ErrorKind.MARKER_POSITION if length >= 0 else ErrorKind.SECTION_LENGTH
            yield from fail(
                kind,
                f"impossible section: next marker at {next_pos}, uncompressed length {length}",
                head,
            )
            return None
        end = logical + MARKER_SIZE + length
        if self.limit is not None and end > self.limit:
            return None  # not durable according to the index: later
        yield from self._section(
            logical, pos, end, next_pos, next_pos - pos - COMPRESSED_SECTION_HEADER_SIZE
        )
        if end <= self.start:
            return next_pos, end  # wholly before the resume position: not even decompressed
        block = self._read(
            pos + COMPRESSED_SECTION_HEADER_SIZE, next_pos - pos - COMPRESSED_SECTION_HEADER_SIZE
        )
        if len(block) < next_pos - pos - COMPRESSED_SECTION_HEADER_SIZE:
            yield from fail(
                ErrorKind.TRUNCATED,
                f"file ends at {self.size}, inside the block ending at {next_pos}",
                head + block,
            )
            return None
        try:
            content = self.decompress(block, length)
        except DecompressionError as exc:
            yield from fail(ErrorKind.DECOMPRESSION, str(exc), block, end)
            return next_pos, end
        begin = logical + MARKER_SIZE
        if begin < self.start < end and _resumes_at(content[self.start - begin:],
                                                    end - self.start):
            content, begin = content[self.start - begin:], self.start  # see _resumes_at
        following = yield from self._walk(
            content, begin, end, file_offset=pos, find_markers=False
        )
        return None if following is None else (next_pos, end)

    # -- entries ---------------------------------------------------------------------------------

    def _walk(
        self,
        data: bytes,
        base: int,
        end: int,
        *,
        file_offset: int | None,
        find_markers: bool,
        marker_pos: int | None = None,
        stop_at_problem: bool = False,
    ) -> Generator[Record, None, int | None | _Stopped]:
        """Entries of data (logical ``base``) up to ``end``; return the next marker position.

        find_markers: the section end is unknown (its marker was bad); stop at the first entry
        boundary that holds a valid marker (or a zero one) for its position.
        marker_pos: set for an uncompressed section whose end came from the marker at that
        position; a framing problem then first suspects the marker's next-position field.
        stop_at_problem: at the first frame that is not a whole, checked entry, report nothing
        and return _Stopped(its position) (a resumed read's fast path).
        Returns None when nothing after this point can be read safely.
        """
        i = 0
        limit = end - base
        while i < limit:
            pos = base + i
            if find_markers and limit - i >= MARKER_SIZE:
                window = data[i : i + MARKER_SIZE]
                if window == _ZERO_MARKER or self._marker_ok(pos, window):
                    return pos
            frame = _parse_frame(data, i, limit)
            if stop_at_problem and (isinstance(frame, _Problem) and frame.kind is not None
                                    or isinstance(frame, _Frame) and not frame.crc_ok):
                return _Stopped(pos)
            if isinstance(frame, _Problem):
                if frame.kind is None:
                    return end
                if marker_pos is not None:
                    recovered = yield from self._misplaced_end(marker_pos, end, pos, frame.kind)
                    if recovered is not _NOT_MISPLACED:
                        return recovered
                # Lost framing: recoverable at the next marker only when we know where it is.
                terminal = find_markers or frame.kind is ErrorKind.TRUNCATED
                resume = None if terminal else end
                yield from self._error(
                    frame.kind, pos, frame.reason, bytes(data[i:limit]), resume, file_offset
                )
                return resume
            entry_end = pos + frame.length
            if pos < self.start < entry_end:
                raise ValueError(
                    f"resume position {self.start} is inside the entry at {pos}..{entry_end} "
                    f"of {self.path}"
                )
            if frame.crc_ok:
                if pos >= self.start:
                    yield Entry(
                        self.descriptor.segment_id,
                        self.descriptor.version,
                        pos,
                        entry_end,
                        frame.mutation,
                    )
            else:
                yield from self._error(
                    ErrorKind.ENTRY_CRC,
                    pos,
                    f"entry CRC mismatch ({frame.length - ENTRY_OVERHEAD} mutation bytes; "
                    "size CRC was good)",
                    bytes(data[i : i + frame.length]),
                    entry_end,
                    file_offset,
                )
            i += frame.length
        return end

    def _misplaced_end(
        self, marker_pos: int, end: int, pos: int, kind: ErrorKind
    ) -> Generator[Record, None, int | None | object]:
        """Uncompressed only: is the section marker's next position (not covered by its CRC) wrong?

        Too large: the entry walk meets the real next marker, which is not an entry; if a marker
        with a valid CRC for this very position is there, the chain goes on from it. Too small: a
        size-checked entry runs past the announced end; walk on entry by entry as after a bad
        marker. Either way the marker is reported. _NOT_MISPLACED: neither; handle as bad entry.
        """
        marker = self._read(marker_pos, MARKER_SIZE)
        window = self._read(pos, MARKER_SIZE)
        if kind in (
            ErrorKind.ENTRY_SIZE_CRC,
            ErrorKind.ENTRY_SIZE_INVALID,
            ErrorKind.TRAILING_BYTES,
        ) and self._marker_ok(pos, window):
            reason = (
                f"sync marker says the section ends at {end}, but a valid sync marker sits "
                f"at {pos}; continuing there"
            )
            yield from self._error(ErrorKind.MARKER_POSITION, marker_pos, reason, marker, pos)
            return pos
        if kind is ErrorKind.ENTRY_OVERRUN or (
            kind is ErrorKind.TRAILING_BYTES and _entry_header_ok(window)
        ):
            reason = (
                f"the entry at {pos} runs past the section end {end} that the sync marker gives; "
                "continuing entry by entry"
            )
            yield from self._error(ErrorKind.MARKER_POSITION, marker_pos, reason, marker, pos)
            return (yield from self._resync(pos))
        return _NOT_MISPLACED
