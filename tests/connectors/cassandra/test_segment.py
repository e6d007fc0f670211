"""The commit-log framing reader on segments built byte for byte by a test writer (no node)."""

from __future__ import annotations

import builtins
import random
import struct
from pathlib import Path

import pytest

from connectors.cassandra.cdc_index import CdcIndex, IndexNotReady, parse_cdc_index, read_cdc_index
from connectors.cassandra.descriptor import cdc_index_path, parse_header
from connectors.cassandra.errors import (
    CdcIndexError,
    CodecUnavailableError,
    EncryptedSegmentError,
    HeaderError,
    UnsupportedSegmentError,
)
from connectors.cassandra.segment import (
    Entry,
    ErrorKind,
    ReadError,
    SyncSection,
    read_descriptor,
    read_segment,
    scan_sections,
)
from tests.connectors.cassandra.segment_writer import (
    SegmentWriter,
    entry_bytes,
    header_bytes,
    marker_bytes,
)

SEGMENT_ID = 1_732_590_000_123  # millisecond-clock ids exceed 32 bits: exercises the id's high word
CODEC_NAMES = [
    "LZ4Compressor",
    "SnappyCompressor",
    "DeflateCompressor",
    "ZstdCompressor",
    "NoopCompressor",
]
NEEDS_CRAMJAM = {"LZ4Compressor", "SnappyCompressor", "ZstdCompressor"}


def mutation(rng: random.Random, n: int | None = None) -> bytes:
    return rng.randbytes(n if n is not None else rng.randint(10, 300))


def fill(writer: SegmentWriter, sections: list[int], seed: int = 7) -> list[int]:
    """Add ``sections[k]`` entries then sync, for each k; return the idx offsets after each sync."""
    rng = random.Random(seed)
    offsets = []
    for count in sections:
        for _ in range(count):
            writer.add(mutation(rng))
        offsets.append(writer.sync())
    return offsets


def save(tmp_path: Path, writer: SegmentWriter, data: bytes | None = None) -> Path:
    path = tmp_path / writer.file_name()
    path.write_bytes(writer.data() if data is None else data)
    return path


def entries(records: list) -> list[Entry]:
    return [r for r in records if isinstance(r, Entry)]


def errors(records: list) -> list[ReadError]:
    return [r for r in records if isinstance(r, ReadError)]


def as_tuples(records: list) -> list[tuple[int, int, bytes]]:
    return [(e.start, e.end, e.mutation) for e in entries(records)]


def expected(writer: SegmentWriter, upto: int | None = None) -> list[tuple[int, int, bytes]]:
    return [(e.start, e.end, e.mutation) for e in writer.entries if upto is None or e.end <= upto]


def codec_available(name: str) -> None:
    """cramjam is a declared dependency (docs/adr/0002): its absence fails, never skips."""
    if name in NEEDS_CRAMJAM:
        import cramjam  # noqa: F401


# -- header ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "messaging"), [(7, 12), (8, 13)])
def test_header_versions(version: int, messaging: int) -> None:
    raw = header_bytes(version, SEGMENT_ID)
    d = parse_header(raw + b"trailing bytes are not the header's business")
    assert (d.version, d.segment_id, d.messaging_version) == (version, SEGMENT_ID, messaging)
    assert d.header_length == len(raw) == 4 + 8 + 2 + 2 + 4
    assert d.compression is None and not d.encrypted and d.parameters_json == "{}"


def test_header_compression_parameters() -> None:
    raw = header_bytes(
        8,
        SEGMENT_ID,
        {
            "compressionClass": "org.apache.cassandra.io.compress.LZ4Compressor",
            "compressionParameters": {"lz4_compressor_type": "fast"},
        },
    )
    d = parse_header(raw)
    assert d.compression is not None
    assert d.compression.class_name == "org.apache.cassandra.io.compress.LZ4Compressor"
    assert d.compression.parameters == (("lz4_compressor_type", "fast"),)


def test_header_negative_id_high_word() -> None:
    # The id is a signed long; the CRC takes its high word as Java's unsigned shift does.
    d = parse_header(header_bytes(7, -5))
    assert d.segment_id == -5


@pytest.mark.parametrize("cut", [0, 3, 13, 16, 19])
def test_header_truncated(cut: int) -> None:
    with pytest.raises(HeaderError) as info:
        parse_header(header_bytes(7, SEGMENT_ID)[:cut])
    assert info.value.kind == "truncated"


@pytest.mark.parametrize("byte", [0, 3, 4, 11, 12, 14, 16, 19])
def test_header_crc_corruption_is_a_record(tmp_path: Path, byte: int) -> None:
    writer = SegmentWriter(SEGMENT_ID)
    fill(writer, [3])
    data = bytearray(writer.data())
    data[byte] ^= 0x01
    path = tmp_path / "copy-of-a-segment.log"
    path.write_bytes(bytes(data))
    records = list(read_segment(path))
    assert len(records) == 1
    (error,) = errors(records)
    assert error.kind in (ErrorKind.HEADER_CRC, ErrorKind.HEADER_TRUNCATED)
    assert error.resume_at is None and error.offset == 0 and error.raw
    with pytest.raises(HeaderError):
        read_descriptor(path)


def test_header_params_not_json_with_good_crc(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(header_bytes(7, SEGMENT_ID, raw_params=b"not json") + bytes(64))
    (error,) = list(read_segment(path))
    assert error.kind is ErrorKind.HEADER_MALFORMED


def test_file_name_and_header_disagree(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID)
    fill(writer, [2])
    path = tmp_path / f"CommitLog-7-{SEGMENT_ID + 1}.log"
    path.write_bytes(writer.data())
    (error,) = list(read_segment(path))
    assert error.kind is ErrorKind.SEGMENT_ID_MISMATCH and error.resume_at is None


# -- refusals ------------------------------------------------------------------------------------


def test_encrypted_segment_is_refused_by_name(tmp_path: Path) -> None:
    writer = SegmentWriter(
        SEGMENT_ID,
        params={
            "encCipher": "AES/CBC/PKCS5Padding",
            "encKeyAlias": "testing:1",
            "encIV": "00112233445566778899aabbccddeeff",
        },
    )
    fill(writer, [1])
    path = save(tmp_path, writer)
    with pytest.raises(EncryptedSegmentError) as info:
        read_segment(path)
    assert str(path) in str(info.value) and "encrypted" in str(info.value)
    with pytest.raises(EncryptedSegmentError):
        read_descriptor(path)


def test_unsupported_version_is_refused(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID, version=6)
    fill(writer, [1])
    with pytest.raises(UnsupportedSegmentError, match="version 6"):
        read_segment(save(tmp_path, writer))


def test_unknown_compressor_is_refused(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID, compressor="com.example.MyCompressor", encode=lambda b: b)
    fill(writer, [1])
    with pytest.raises(UnsupportedSegmentError, match="com.example.MyCompressor"):
        read_segment(save(tmp_path, writer))


def test_missing_codec_package_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = SegmentWriter(SEGMENT_ID, compressor="LZ4Compressor")
    fill(writer, [1])
    path = save(tmp_path, writer)
    real_import = builtins.__import__

    def no_cramjam(name: str, *args, **kwargs):
        if name == "cramjam":
            raise ImportError("No module named 'cramjam'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cramjam)
    with pytest.raises(CodecUnavailableError, match="cramjam") as info:
        read_segment(path)
    assert str(path) in str(info.value)


# -- sections, entries, positions ------------------------------------------------------------------


@pytest.mark.parametrize("version", [7, 8])
def test_sections_and_entry_positions(tmp_path: Path, version: int) -> None:
    writer = SegmentWriter(SEGMENT_ID, version=version)
    offsets = fill(writer, [3, 1, 4, 2])
    idx = writer.close()
    path = save(tmp_path, writer)
    records = list(read_segment(path))
    assert not errors(records)
    assert as_tuples(records) == expected(writer)
    assert all(e.segment_id == SEGMENT_ID and e.version == version for e in entries(records))
    # Entries are contiguous inside a section; sections are separated by their 8-byte marker.
    assert entries(records)[0].start == writer.header.__len__() + 8
    # The same with the idx offset of each sync, and with the completed index.
    for k, offset in enumerate(offsets):
        assert as_tuples(list(read_segment(path, limit=offset))) == expected(writer, offset), k
    index = parse_cdc_index(idx.encode())
    assert isinstance(index, CdcIndex) and index.completed
    assert as_tuples(list(read_segment(path, limit=index.read_limit))) == expected(writer)
    sections = [s for s in scan_sections(path) if isinstance(s, SyncSection)]
    assert [s.end for s in sections] == writer.section_ends


def test_empty_segment_and_empty_sections(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID)
    fill(writer, [0, 2, 0])
    writer.close()
    records = list(read_segment(save(tmp_path, writer)))
    assert not errors(records) and as_tuples(records) == expected(writer)
    fresh = SegmentWriter(SEGMENT_ID + 1)
    assert list(read_segment(save(tmp_path, fresh))) == []


@pytest.mark.parametrize("compressor", [None, "LZ4Compressor", "DeflateCompressor"])
def test_resume_from_every_saved_position(tmp_path: Path, compressor: str | None) -> None:
    if compressor:
        codec_available(compressor)
    writer = SegmentWriter(SEGMENT_ID, compressor=compressor)
    fill(writer, [3, 2, 4])
    writer.close()
    path = save(tmp_path, writer)
    everything = as_tuples(list(read_segment(path)))
    assert everything == expected(writer)
    for k, (_, end, _) in enumerate(everything):
        assert as_tuples(list(read_segment(path, start=end))) == everything[k + 1 :]
    assert list(read_segment(path, start=0)) == list(read_segment(path))


def test_resume_position_must_be_a_boundary(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID)
    fill(writer, [2, 2])
    path = save(tmp_path, writer)
    first = writer.entries[0]
    with pytest.raises(ValueError, match="inside the entry"):
        list(read_segment(path, start=first.start + 3))
    second_marker = writer.section_ends[0]
    with pytest.raises(ValueError, match="inside the sync marker"):
        list(read_segment(path, start=second_marker + 4))


# -- the idx limit and segments still being written ----------------------------------------------


def test_limit_with_a_partially_written_tail(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID, capacity=1 << 20)
    offsets = fill(writer, [2, 3])
    rng = random.Random(99)
    for _ in range(3):
        writer.add(mutation(rng))  # appended, not synced: beyond the idx offset
    path = save(tmp_path, writer)
    records = list(read_segment(path, limit=offsets[-1]))
    assert not errors(records)
    assert as_tuples(records) == expected(writer, offsets[-1])
    # Without a limit the zero marker of the open section ends the read, again without errors.
    assert as_tuples(list(read_segment(path))) == expected(writer, offsets[-1])
    # Garbage past the limit is never read: not even the marker position at the limit.
    data = bytearray(writer.data())
    data[offsets[-1] :] = random.Random(3).randbytes(len(data) - offsets[-1])
    path.write_bytes(bytes(data))
    records = list(read_segment(path, limit=offsets[-1]))
    assert not errors(records) and as_tuples(records) == expected(writer, offsets[-1])
    # And the file may even end right at the limit.
    path.write_bytes(bytes(data[: offsets[-1]]))
    assert as_tuples(list(read_segment(path, limit=offsets[-1]))) == expected(writer, offsets[-1])


def test_resume_then_later_limit(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID)
    first_limit = fill(writer, [2])[0]
    path = save(tmp_path, writer)
    seen = entries(list(read_segment(path, limit=first_limit)))
    second_limit = fill(writer, [3], seed=8)[0]
    path.write_bytes(writer.data())
    more = entries(list(read_segment(path, start=seen[-1].end, limit=second_limit)))
    assert [(e.start, e.end, e.mutation) for e in seen + more] == expected(writer)


def test_compressed_limit_with_half_written_section(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID, compressor="DeflateCompressor")
    offsets = fill(writer, [2, 2])
    synced_file = writer.data()
    fill(writer, [3], seed=11)
    half = writer.data()[: len(synced_file) + (len(writer.data()) - len(synced_file)) // 2]
    path = save(tmp_path, writer, half)
    records = list(read_segment(path, limit=offsets[-1]))
    assert not errors(records)
    assert as_tuples(records) == expected(writer, offsets[-1])
    # The idx offset is logical: here it is larger than the synced part of the file.
    assert offsets[-1] > 0 and as_tuples(records)[-1][1] == offsets[-1]


def test_completed_compressed_index_after_replay_uses_whole_file(tmp_path: Path) -> None:
    # After a restart Cassandra writes "<file length>\nCOMPLETED": a FILE length, smaller than the
    # logical end when the data compresses well. COMPLETED must mean "read to the end".
    writer = SegmentWriter(SEGMENT_ID, compressor="DeflateCompressor")
    rng = random.Random(5)
    for _ in range(20):
        writer.add(bytes(200) + mutation(rng, 10))
    writer.sync()
    writer.close()
    path = save(tmp_path, writer)
    file_length = path.stat().st_size
    assert file_length < writer.entries[-1].end
    index = parse_cdc_index(f"{file_length}\nCOMPLETED".encode())
    assert isinstance(index, CdcIndex)
    assert as_tuples(list(read_segment(path, limit=index.read_limit))) == expected(writer)


def test_zero_marker_before_the_limit(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID)
    offsets = fill(writer, [2, 2])
    data = bytearray(writer.data())
    data[offsets[0] : offsets[0] + 8] = bytes(8)
    path = save(tmp_path, writer, bytes(data))
    records = list(read_segment(path, limit=offsets[1]))
    assert as_tuples(records) == expected(writer, offsets[0])
    (error,) = errors(records)
    assert (
        error.kind is ErrorKind.PREMATURE_END
        and error.offset == offsets[0]
        and error.resume_at is None
    )


# -- bad bytes -------------------------------------------------------------------------------------


def test_entry_crc_mismatch_skips_only_that_entry(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID)
    fill(writer, [4, 2])
    bad = writer.entries[1]
    data = bytearray(writer.data())
    data[bad.start + 8 + 5] ^= 0xFF
    path = save(tmp_path, writer, bytes(data))
    records = list(read_segment(path))
    (error,) = errors(records)
    assert error.kind is ErrorKind.ENTRY_CRC
    assert (error.offset, error.resume_at) == (bad.start, bad.end)
    assert error.raw == bytes(data[bad.start : bad.end])
    assert error.segment_id == SEGMENT_ID and error.segment_path == str(path)
    assert as_tuples(records) == [t for t in expected(writer) if t[0] != bad.start]
    # Records come in file order: the error sits between its neighbours.
    assert records.index(error) == 1
    # Resuming at the error's resume_at continues after it without reporting it again.
    assert list(read_segment(path, start=error.resume_at)) == records[2:]


def test_size_crc_mismatch_skips_to_next_section(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID)
    offsets = fill(writer, [4, 3])
    bad = writer.entries[1]
    data = bytearray(writer.data())
    data[bad.start + 1] ^= 0x40  # the size field
    path = save(tmp_path, writer, bytes(data))
    records = list(read_segment(path))
    (error,) = errors(records)
    assert error.kind is ErrorKind.ENTRY_SIZE_CRC
    assert (error.offset, error.resume_at) == (bad.start, offsets[0])
    assert error.raw == bytes(data[bad.start : offsets[0]])
    assert as_tuples(records) == expected(writer)[:1] + expected(writer)[4:]
    assert list(read_segment(path, start=error.resume_at)) == records[2:]


def test_entry_size_below_minimum(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID)
    writer.add(b"short")  # 5 bytes: Cassandra would never write it; the reader must not accept it
    offsets = fill(writer, [0, 2])
    records = list(read_segment(save(tmp_path, writer)))
    (error,) = errors(records)
    assert error.kind is ErrorKind.ENTRY_SIZE_INVALID and error.resume_at == offsets[0]
    assert as_tuples(records) == expected(writer)[1:]


def test_uncompressed_marker_crc_mismatch_recovers_entry_by_entry(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID)
    offsets = fill(writer, [3, 3, 2])
    data = bytearray(writer.data())
    data[offsets[0] + 6] ^= 0x10  # CRC of the second section's marker
    path = save(tmp_path, writer, bytes(data))
    for limit in (None, offsets[-1]):
        records = list(read_segment(path, limit=limit))
        (error,) = errors(records)
        assert error.kind is ErrorKind.MARKER_CRC and error.offset == offsets[0]
        assert (
            error.raw == bytes(data[offsets[0] : offsets[0] + 8])
            and error.resume_at == offsets[0] + 8
        )
        assert as_tuples(records) == expected(writer)
    resumed = list(read_segment(path, start=writer.entries[4].end))
    assert as_tuples(resumed) == expected(writer)[5:] and not errors(resumed)


def test_uncompressed_marker_pointing_backwards(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID)
    offsets = fill(writer, [2, 2])
    data = bytearray(writer.data())
    data[offsets[0] : offsets[0] + 4] = struct.pack(
        ">i", 100
    )  # nextMarker is not covered by the CRC
    records = list(read_segment(save(tmp_path, writer, bytes(data))))
    (error,) = errors(records)
    assert error.kind is ErrorKind.MARKER_POSITION
    assert as_tuples(records) == expected(writer)


def test_marker_recovery_gives_up_when_an_entry_is_also_bad(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID)
    offsets = fill(writer, [2, 3, 2])
    data = bytearray(writer.data())
    data[offsets[0] + 6] ^= 0x10  # second marker
    data[writer.entries[3].start + 2] ^= 0x01  # and an entry size inside that section
    records = list(read_segment(save(tmp_path, writer, bytes(data)), limit=offsets[-1]))
    kinds = [e.kind for e in errors(records)]
    assert kinds == [ErrorKind.MARKER_CRC, ErrorKind.ENTRY_SIZE_CRC]
    assert errors(records)[-1].resume_at is None
    assert as_tuples(records) == expected(writer)[:3]  # nothing is guessed after that


def test_truncated_file(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID)
    offsets = fill(writer, [3, 3])
    cut = writer.entries[4].start + 20
    path = save(tmp_path, writer, writer.data()[:cut])
    for limit in (None, offsets[-1]):
        records = list(read_segment(path, limit=limit))
        (error,) = errors(records)
        assert error.kind is ErrorKind.TRUNCATED and error.resume_at is None
        assert error.offset == writer.entries[4].start
        assert as_tuples(records) == expected(writer)[:4]
    # A file shorter than the index says, cut at a marker.
    path.write_bytes(writer.data()[: offsets[0] + 3])
    records = list(read_segment(path, limit=offsets[-1]))
    assert [e.kind for e in errors(records)] == [ErrorKind.TRUNCATED]
    assert as_tuples(records) == expected(writer)[:3]


def test_non_zero_trailing_bytes_in_a_section(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID)
    rng = random.Random(2)
    writer.add(mutation(rng))
    writer.add(mutation(rng))
    writer.position += 6  # 6 bytes at the end of the section that no entry claims
    writer.buffer[writer.position - 6 : writer.position] = b"\x01" * 6
    first_end = writer.sync()
    fill(writer, [2], seed=3)
    records = list(read_segment(save(tmp_path, writer)))
    (error,) = errors(records)
    assert error.kind is ErrorKind.TRAILING_BYTES and error.resume_at == first_end
    assert (error.offset, error.raw) == (first_end - 6, b"\x01" * 6)
    assert as_tuples(records) == expected(writer)


# -- compression ------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODEC_NAMES)
@pytest.mark.parametrize("qualified", [False, True])
def test_compressed_segments(tmp_path: Path, codec: str, qualified: bool) -> None:
    codec_available(codec)
    name = f"org.apache.cassandra.io.compress.{codec}" if qualified else codec
    writer = SegmentWriter(SEGMENT_ID, version=8, compressor=name)
    offsets = fill(writer, [3, 1, 5])
    idx = writer.close()  # an empty closing section, as CompressedSegment writes it
    path = save(tmp_path, writer)
    records = list(read_segment(path))
    assert not errors(records)
    assert as_tuples(records) == expected(writer)
    for offset in offsets:
        assert as_tuples(list(read_segment(path, limit=offset))) == expected(writer, offset)
    sections = [s for s in scan_sections(path) if isinstance(s, SyncSection)]
    assert [s.end for s in sections] == writer.section_ends
    assert sections[-1].start == sections[-1].end  # the empty closing section
    # Logical positions differ from file positions after the first section.
    assert sections[1].offset == offsets[0] and sections[1].file_offset != offsets[0]
    assert parse_cdc_index(idx.encode()) == CdcIndex(writer.section_ends[-1], True)


REAL_ENCODERS = {
    "LZ4Compressor": lambda data: __import__("cramjam").lz4.compress_block(data, store_size=False),
    "SnappyCompressor": lambda data: __import__("cramjam").snappy.compress_raw(data),
    "ZstdCompressor": lambda data: __import__("cramjam").zstd.compress(data),
}


@pytest.mark.parametrize("codec", sorted(REAL_ENCODERS))
def test_really_compressed_blocks(tmp_path: Path, codec: str) -> None:
    # Literal-only streams prove the framing; these prove the decoders on real matches as well.
    cramjam = pytest.importorskip("cramjam")
    encode = REAL_ENCODERS[codec]
    if codec == "LZ4Compressor":
        frame = lambda data: len(data).to_bytes(4, "little") + bytes(encode(data))  # noqa: E731
    else:
        frame = lambda data: bytes(encode(data))  # noqa: E731
    assert cramjam  # imported for the encoders above
    writer = SegmentWriter(SEGMENT_ID, compressor=codec, encode=frame)
    rng = random.Random(1)
    for _section in range(3):
        for _ in range(4):
            writer.add(b"keyspace.table" * 20 + mutation(rng, 30))
        writer.sync()
    path = save(tmp_path, writer)
    assert path.stat().st_size < writer.entries[-1].end  # it really compressed
    records = list(read_segment(path))
    assert not errors(records) and as_tuples(records) == expected(writer)


@pytest.mark.parametrize("codec", CODEC_NAMES)
def test_undecodable_block_skips_that_section(tmp_path: Path, codec: str) -> None:
    codec_available(codec)
    writer = SegmentWriter(SEGMENT_ID, compressor=codec)
    offsets = fill(writer, [2, 3, 2])
    sections = [s for s in scan_sections(save(tmp_path, writer)) if isinstance(s, SyncSection)]
    data = bytearray(writer.data())
    second = sections[1]
    if codec == "NoopCompressor":
        # No codec check to fail: the damage shows up in the entries, which CRCs catch.
        data[second.file_offset + 12 + 1] ^= 0x01
    else:
        # Shorten the announced uncompressed length: no codec can honour it.
        length_at = second.file_offset + 8
        (length,) = struct.unpack_from(">i", data, length_at)
        data[length_at : length_at + 4] = struct.pack(">i", length - 1)
    path = save(tmp_path, writer, bytes(data))
    records = list(read_segment(path))
    (error,) = errors(records)
    if codec == "NoopCompressor":
        assert error.kind is ErrorKind.ENTRY_SIZE_CRC and error.file_offset == second.file_offset
        assert as_tuples(records) == expected(writer, offsets[0]) + expected(writer)[5:]
    else:
        assert error.kind is ErrorKind.DECOMPRESSION
        assert error.offset == offsets[0] and error.file_offset == second.file_offset
        assert (
            error.resume_at == offsets[1] - 1
        )  # logical space follows the (damaged) announced length
        later = [(s - 1, e - 1, m) for s, e, m in expected(writer)[5:]]
        assert as_tuples(records) == expected(writer, offsets[0]) + later


def test_compressed_marker_crc_mismatch_is_terminal(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID, compressor="DeflateCompressor")
    offsets = fill(writer, [2, 2, 2])
    sections = [s for s in scan_sections(save(tmp_path, writer)) if isinstance(s, SyncSection)]
    data = bytearray(writer.data())
    data[sections[1].file_offset + 5] ^= 0x01
    records = list(read_segment(save(tmp_path, writer, bytes(data))))
    (error,) = errors(records)
    assert error.kind is ErrorKind.MARKER_CRC and error.resume_at is None
    assert error.offset == offsets[0] and error.file_offset == sections[1].file_offset
    assert as_tuples(records) == expected(writer, offsets[0])


def test_compressed_entry_crc_mismatch(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID, compressor="NoopCompressor")
    fill(writer, [3])
    sections = [s for s in scan_sections(save(tmp_path, writer)) if isinstance(s, SyncSection)]
    bad = writer.entries[1]
    data = bytearray(writer.data())
    # Noop keeps content bytes in place, shifted by the 4-byte length field.
    data[sections[0].file_offset + 12 + (bad.start - sections[0].start) + 9] ^= 0x01
    records = list(read_segment(save(tmp_path, writer, bytes(data))))
    (error,) = errors(records)
    assert error.kind is ErrorKind.ENTRY_CRC and (error.offset, error.resume_at) == (
        bad.start,
        bad.end,
    )
    assert error.file_offset == sections[0].file_offset
    assert len(entries(records)) == 2


# -- the _cdc.idx file ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "result"),
    [
        (b"12345", CdcIndex(12345, False)),
        (b"12345\nCOMPLETED", CdcIndex(12345, True)),
        (b"0", CdcIndex(0, False)),
    ],
)
def test_cdc_index_values(content: bytes, result: CdcIndex) -> None:
    assert parse_cdc_index(content) == result


@pytest.mark.parametrize("content", [b"", b"12345\n", b"12345\nCOMP", b"12345\nCOMPLETE"])
def test_cdc_index_not_ready(content: bytes) -> None:
    assert isinstance(parse_cdc_index(content), IndexNotReady)


@pytest.mark.parametrize(
    "content", [b"abc", b"12345\nDONE", b"-5", b"12 345", b"12345\nCOMPLETED\n"]
)
def test_cdc_index_garbage(content: bytes) -> None:
    with pytest.raises(CdcIndexError):
        parse_cdc_index(content)


def test_cdc_index_files(tmp_path: Path) -> None:
    log = tmp_path / f"CommitLog-7-{SEGMENT_ID}.log"
    idx = cdc_index_path(log)
    assert idx.name == f"CommitLog-7-{SEGMENT_ID}_cdc.idx"
    assert isinstance(read_cdc_index(idx), IndexNotReady)
    idx.write_bytes(b"")
    assert isinstance(read_cdc_index(idx), IndexNotReady)
    idx.write_bytes(b"4096\nCOMPLETED")
    assert read_cdc_index(idx) == CdcIndex(4096, True)


def test_writer_helper_matches_the_documented_layout() -> None:
    # A guard on the test's own writer: the vectors below are the formulas of docs section 3.
    import zlib

    h = header_bytes(7, 1)
    assert h[:16] == bytes.fromhex("0000000700000000000000010002") + b"{}"
    crc = zlib.crc32(bytes.fromhex("00000007000000010000000000000002") + b"{}")
    assert h[16:] == crc.to_bytes(4, "big")
    m = marker_bytes(1, 20, 100)
    assert m == bytes.fromhex("00000064") + zlib.crc32(
        bytes.fromhex("000000010000000000000014")
    ).to_bytes(4, "big")
    e = entry_bytes(b"0123456789")
    size_crc = zlib.crc32(bytes.fromhex("0000000a"))
    assert e[:8] == bytes.fromhex("0000000a") + size_crc.to_bytes(4, "big")
    assert e[-4:] == zlib.crc32(bytes.fromhex("0000000a") + b"0123456789").to_bytes(4, "big")


# -- marker positions, limits inside sections, file ends ----------------------------------------


def test_uncompressed_marker_next_position_too_small(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID)
    offsets = fill(writer, [3, 2])
    data = bytearray(writer.data())
    header_end = len(writer.header)
    data[header_end : header_end + 4] = struct.pack(">i", writer.entries[1].start + 5)
    path = save(tmp_path, writer, bytes(data))
    records = list(read_segment(path, limit=offsets[-1]))
    (error,) = errors(records)
    assert error.kind is ErrorKind.MARKER_POSITION and error.offset == header_end
    assert error.resume_at == writer.entries[1].start
    assert as_tuples(records) == expected(writer)
    assert list(read_segment(path, start=error.resume_at, limit=offsets[-1])) == records[2:]


@pytest.mark.parametrize("damage", ["too small", "too large", "an entry of the next section",
                                    "a later marker, a bad entry between"])
def test_a_read_resumed_after_any_entry_of_a_damaged_marker_section_gives_the_rest(
        tmp_path: Path, damage: str) -> None:
    """A marker's nextMarker field is not covered by its CRC. The first read finds the damage
    and walks on entry by entry; a read resumed after any entry (a poll's max_records, a
    restart) must give exactly the entries after it, not skip to the damaged position, take
    what it finds there for errors already reported, and end the segment there. (The error
    about the marker is reported where it is found, after entries; a read resumed after
    those entries leaves it out, as one that lies before its start.)"""
    writer = SegmentWriter(SEGMENT_ID)
    offsets = fill(writer, [3, 4, 2])
    data = bytearray(writer.data())
    header_end = len(writer.header)
    wrong = {"too small": writer.entries[1].start + 5, "too large": offsets[1] + 16,
             # The first section claims to end at an entry boundary of the second one, or at
             # the third section's (valid) marker with a damaged entry in the second.
             "an entry of the next section": writer.entries[5].start,
             "a later marker, a bad entry between": offsets[1]}[damage]
    data[header_end : header_end + 4] = struct.pack(">i", wrong)
    if damage == "a later marker, a bad entry between":
        data[writer.entries[5].start + 12] ^= 0xFF  # a byte of its mutation: entry CRC
    path = save(tmp_path, writer, bytes(data))
    records = list(read_segment(path, limit=offsets[-1]))
    if damage != "a later marker, a bad entry between":
        assert as_tuples(records) == expected(writer)
    entries = [r for r in records if not isinstance(r, ReadError)]
    for index, entry in enumerate(entries):
        resumed = list(read_segment(path, start=entry.end, limit=offsets[-1]))
        assert [r for r in resumed if not isinstance(r, ReadError)] == entries[index + 1:], (
            index, entry.end)


def test_uncompressed_marker_next_position_too_large(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID)
    offsets = fill(writer, [3, 2, 1])
    data = bytearray(writer.data())
    header_end = len(writer.header)
    data[header_end : header_end + 4] = struct.pack(">i", offsets[1] + 16)
    path = save(tmp_path, writer, bytes(data))
    records = list(read_segment(path))
    (error,) = errors(records)
    assert error.kind is ErrorKind.MARKER_POSITION and error.resume_at == offsets[0]
    assert as_tuples(records) == expected(writer)


@pytest.mark.parametrize("compressor", [None, "DeflateCompressor"])
def test_limit_inside_a_section_defers_it(tmp_path: Path, compressor: str | None) -> None:
    # An index never points inside a section; if one seems to, the section is left for later.
    writer = SegmentWriter(SEGMENT_ID, compressor=compressor)
    offsets = fill(writer, [2, 3])
    path = save(tmp_path, writer)
    records = list(read_segment(path, limit=offsets[1] - 20))
    assert not errors(records) and as_tuples(records) == expected(writer, offsets[0])
    records = list(read_segment(path, limit=offsets[0] + 3))  # inside the next marker
    assert not errors(records) and as_tuples(records) == expected(writer, offsets[0])


def test_limit_and_start_validation(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID)
    path = save(tmp_path, writer)
    with pytest.raises(ValueError):
        read_segment(path, start=-1)
    with pytest.raises(ValueError):
        read_segment(path, limit=-1)


def test_uncompressed_file_ending_at_a_section_end(tmp_path: Path) -> None:
    # DirectIO segments are not preallocated: the file may end right after the last section.
    writer = SegmentWriter(SEGMENT_ID)
    offsets = fill(writer, [2, 2])
    path = save(tmp_path, writer, writer.data()[: offsets[-1]])
    records = list(read_segment(path))
    assert not errors(records) and as_tuples(records) == expected(writer)
    path.write_bytes(writer.data()[: offsets[-1] + 4] + b"\x00" * 0)
    records = list(read_segment(path))
    assert not errors(records) and as_tuples(records) == expected(writer)


def test_compressed_truncations(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID, compressor="DeflateCompressor")
    offsets = fill(writer, [2, 2])
    path = save(tmp_path, writer)
    sections = [s for s in scan_sections(path) if isinstance(s, SyncSection)]
    second = sections[1]
    for cut, limit in [
        (second.file_end - 3, None),
        (second.file_end - 3, offsets[-1]),
        (second.file_offset + 10, None),
        (second.file_offset, offsets[-1]),
    ]:
        path.write_bytes(writer.data()[:cut])
        records = list(read_segment(path, limit=limit))
        (error,) = errors(records)
        assert error.kind is ErrorKind.TRUNCATED and error.resume_at is None, (cut, limit)
        assert error.offset == offsets[0] and error.file_offset == second.file_offset
        assert as_tuples(records) == expected(writer, offsets[0])
    # Without a limit, a compressed file ending exactly after a section is simply its end.
    path.write_bytes(writer.data()[: second.file_offset])
    records = list(read_segment(path))
    assert not errors(records) and as_tuples(records) == expected(writer, offsets[0])


def test_recovery_walk_ends_at_zero_padding(tmp_path: Path) -> None:
    writer = SegmentWriter(SEGMENT_ID, capacity=4096)
    offsets = fill(writer, [2, 2])
    data = bytearray(writer.data())
    data[offsets[0] + 5] ^= 0x01  # second marker's CRC: walk on to the end of the data
    records = list(read_segment(save(tmp_path, writer, bytes(data))))
    assert [e.kind for e in errors(records)] == [ErrorKind.MARKER_CRC]
    assert as_tuples(records) == expected(writer)


@pytest.mark.parametrize("compressor", [None, "LZ4Compressor"])
def test_polls_through_a_large_section_parse_each_entry_about_once(
        tmp_path: Path, compressor: str | None, monkeypatch) -> None:
    """A read resumed inside a section starts at its resume position (an entry boundary an
    earlier read gave) instead of walking the section's earlier entries again: polling a
    section of 600 entries 10 at a time parses each entry about once, not the section up to
    the position at every poll (about 18,000 frames). Counted, not timed; the entries are
    the ones one read gives."""
    import connectors.cassandra.segment as segment

    codec_available(compressor or "")
    writer = SegmentWriter(SEGMENT_ID, compressor=compressor, capacity=1 << 20)
    fill(writer, [600])
    path = save(tmp_path, writer)
    parsed = [0]
    real = segment._parse_frame  # noqa: SLF001 - what is counted

    def counting(*args):
        parsed[0] += 1
        return real(*args)

    monkeypatch.setattr(segment, "_parse_frame", counting)
    got, start = [], None
    while True:
        batch = []
        for record in read_segment(path, start=start):
            batch.append(record)
            if len(batch) == 10:
                break
        if not batch:
            break
        got += batch
        start = batch[-1].end
    assert as_tuples(got) == expected(writer)
    assert parsed[0] < 2 * 600 + 200, parsed[0]


def test_a_read_resumed_at_a_sections_first_entry_reads_on(tmp_path: Path) -> None:
    """A resume position right after a section's marker (a configured start_at taken from a
    Cassandra position) is that section's first entry."""
    writer = SegmentWriter(SEGMENT_ID)
    fill(writer, [3, 2])
    path = save(tmp_path, writer)
    first = writer.entries[0].start
    assert as_tuples(list(read_segment(path, start=first))) == expected(writer)
