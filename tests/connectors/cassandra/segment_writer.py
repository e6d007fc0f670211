"""A small commit-log segment WRITER for tests, following Cassandra 5.0's Java layout.

Deliberately independent of connectors.cassandra (its own CRC and layout code) so that the reader
is tested on bytes it did not produce. It models the two writer families of CommitLogSegment:

- uncompressed (MemoryMappedSegment / DirectIOSegment): one buffer that IS the file. The header
  is followed by a reserved 8-byte marker; entries are appended; sync() writes the marker at the
  section start pointing at the current position, zeroes the next 8 bytes (the next, still empty,
  marker) and returns that position (the _cdc.idx offset). The file is preallocated with zeros.
- compressed (CompressedSegment): entries go to the same logical buffer; sync() appends to the
  file: marker (file positions) + int32 uncompressed length + compressor output over the section.

close() mimics CommitLogSegment.close(): the last section ends at the end of the data, and a
compressed segment writes a section even when it is empty.

The codec encoders below produce valid streams with literals only (LZ4, Snappy) or raw blocks
(Zstd): simple enough to be written from the format specifications alone, and any conforming
decoder must accept them.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field


def crc_int(crc: int, value: int) -> int:
    return zlib.crc32(struct.pack(">I", value & 0xFFFFFFFF), crc)


def header_bytes(
    version: int, segment_id: int, params: dict | None = None, *, raw_params: bytes | None = None
) -> bytes:
    """CommitLogDescriptor.writeHeader: Jackson writes a TreeMap, i.e. sorted keys, compact."""
    body = (
        raw_params
        if raw_params is not None
        else json.dumps(params or {}, sort_keys=True, separators=(",", ":")).encode()
    )
    crc = crc_int(0, version)
    crc = crc_int(crc, segment_id & 0xFFFFFFFF)
    crc = crc_int(crc, (segment_id >> 32) & 0xFFFFFFFF)
    crc = crc_int(crc, len(body))
    crc = zlib.crc32(body, crc)
    return struct.pack(">iqH", version, segment_id, len(body)) + body + struct.pack(">I", crc)


def marker_bytes(segment_id: int, file_pos: int, next_pos: int) -> bytes:
    crc = crc_int(0, segment_id & 0xFFFFFFFF)
    crc = crc_int(crc, (segment_id >> 32) & 0xFFFFFFFF)
    crc = crc_int(crc, file_pos)
    return struct.pack(">iI", next_pos, crc)


def entry_bytes(mutation: bytes) -> bytes:
    """CommitLog.add: size, crc(size), mutation, crc continuing over the mutation."""
    size_crc = crc_int(0, len(mutation))
    return (
        struct.pack(">iI", len(mutation), size_crc)
        + mutation
        + struct.pack(">I", zlib.crc32(mutation, size_crc))
    )


# -- encoders -----------------------------------------------------------------------------------


def lz4_literals(data: bytes) -> bytes:
    """Cassandra's LZ4Compressor framing (4-byte LE length) around a literal-only LZ4 block."""
    n = len(data)
    token = min(n, 15) << 4
    extra = b""
    if n >= 15:
        rest = n - 15
        extra = b"\xff" * (rest // 255) + bytes([rest % 255])
    return n.to_bytes(4, "little") + bytes([token]) + extra + data


def snappy_literals(data: bytes) -> bytes:
    """Raw snappy (what snappy-java's Snappy.compress writes): varint length, literal elements."""
    out = bytearray()
    n = len(data)
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            break
    for i in range(0, len(data), 65536):
        chunk = data[i : i + 65536]
        m = len(chunk) - 1
        if m < 60:
            out.append(m << 2)
        elif m < 256:
            out += bytes([60 << 2, m])
        else:
            out += bytes([61 << 2]) + m.to_bytes(2, "little")
        out += chunk
    return bytes(out)


def zstd_raw_frame(data: bytes) -> bytes:
    """A zstd frame of raw (stored) blocks: single-segment, 4-byte content size, no checksum."""
    out = bytearray(b"\x28\xb5\x2f\xfd")
    out.append((2 << 6) | (1 << 5))  # FCS field 4 bytes, single segment
    out += len(data).to_bytes(4, "little")
    blocks = [data[i : i + 128 * 1024] for i in range(0, len(data), 128 * 1024)] or [b""]
    for k, block in enumerate(blocks):
        last = 1 if k == len(blocks) - 1 else 0
        out += ((len(block) << 3) | (0 << 1) | last).to_bytes(3, "little") + block
    return bytes(out)


def deflate(data: bytes) -> bytes:
    """java.util.zip.Deflater defaults: a zlib stream; DeflateCompressor writes nothing for b""."""
    return zlib.compress(data) if data else b""


CODECS: dict[str, Callable[[bytes], bytes]] = {
    "LZ4Compressor": lz4_literals,
    "SnappyCompressor": snappy_literals,
    "ZstdCompressor": zstd_raw_frame,
    "DeflateCompressor": deflate,
    "NoopCompressor": lambda data: data,
}


# -- writer -------------------------------------------------------------------------------------


@dataclass
class WrittenEntry:
    start: int
    end: int
    mutation: bytes


@dataclass
class SegmentWriter:
    segment_id: int
    version: int = 7
    compressor: str | None = None  # class name as it appears in the header
    encode: Callable[[bytes], bytes] | None = None  # defaults to CODECS[short name]
    params: dict | None = None  # extra header params (e.g. encryption keys)
    capacity: int = 1 << 16  # segment size for the uncompressed (preallocated) layout
    entries: list[WrittenEntry] = field(default_factory=list)

    def __post_init__(self) -> None:
        params = dict(self.params or {})
        if self.compressor is not None:
            params["compressionClass"] = self.compressor
            params["compressionParameters"] = {}
            if self.encode is None:
                self.encode = CODECS[self.compressor.rsplit(".", 1)[-1]]
        self.header = header_bytes(self.version, self.segment_id, params)
        self.buffer = bytearray(self.capacity)
        self.buffer[: len(self.header)] = self.header
        self.marker_pos = len(self.header)  # logical position of the open section's marker
        self.position = self.marker_pos + 8
        self.file = bytearray(self.header)  # compressed layout: the file as appended so far
        self.section_ends: list[int] = []

    @property
    def compressed(self) -> bool:
        return self.compressor is not None

    def add(self, mutation: bytes) -> WrittenEntry:
        frame = entry_bytes(mutation)
        start = self.position
        self.buffer[start : start + len(frame)] = frame
        self.position += len(frame)
        entry = WrittenEntry(start, self.position, mutation)
        self.entries.append(entry)
        return entry

    def sync(self, *, closing: bool = False) -> int:
        """Close the open section; return its logical end (the _cdc.idx offset)."""
        start = self.marker_pos
        end = self.position
        if self.compressed:
            assert self.encode is not None
            content = bytes(self.buffer[start + 8 : end])
            block = self.encode(content)
            file_pos = len(self.file)
            next_file_pos = file_pos + 12 + len(block)
            self.file += marker_bytes(self.segment_id, file_pos, next_file_pos)
            self.file += struct.pack(">i", len(content)) + block
        else:
            self.buffer[start : start + 8] = marker_bytes(self.segment_id, start, end)
            if end + 8 <= self.capacity:
                self.buffer[end : end + 8] = bytes(8)
        self.section_ends.append(end)
        self.marker_pos = end
        self.position = end + (0 if closing else 8)
        return end

    def close(self) -> str:
        """Final sync as CommitLogSegment.close(); returns the _cdc.idx text."""
        end = self.sync(closing=True)
        return f"{end}\nCOMPLETED"

    def data(self) -> bytes:
        """The file's bytes now (uncompressed: the whole preallocated buffer)."""
        return bytes(self.file) if self.compressed else bytes(self.buffer)

    def file_name(self) -> str:
        return f"CommitLog-{self.version}-{self.segment_id}.log"
