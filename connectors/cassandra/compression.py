"""Decoders for the blocks of compressed commit-log sync sections.

A compressed section (CompressedSegment.write) is: sync marker, int32 big-endian uncompressed
length, then ONE block produced by the segment's ICompressor over the whole section. What each
compressor writes (org.apache.cassandra.io.compress, 5.0):

- LZ4Compressor: 4-byte LITTLE-endian uncompressed length, then a raw LZ4 block (no frame).
  Decoded with the length taken from that prefix; it must agree with the section header.
- SnappyCompressor: snappy-java ``Snappy.compress`` = the raw snappy format (varint length, then
  elements), not the framing/stream format.
- DeflateCompressor: java.util.zip.Deflater with default settings = a zlib stream (2-byte header,
  deflate data, Adler-32). An empty section may be written as zero bytes.
- ZstdCompressor: a standard zstd frame (zstd-jni, with the content checksum flag set).
- NoopCompressor: the bytes themselves.

LZ4, Snappy and Zstd are decoded with ``cramjam`` (one wheel covering the three; see
docs/adr/0002-compression-codecs.md); Deflate with the standard library's zlib. cramjam is imported
only when a segment needs it, so uncompressed segments and Deflate need nothing extra.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from types import ModuleType

from connectors.cassandra.errors import CodecError, DecompressionError

# (compressed block, uncompressed length announced by the section) -> exactly that many bytes.
Decompressor = Callable[[bytes, int], bytes]

_PACKAGE_PREFIX = "org.apache.cassandra.io.compress."


def short_class_name(class_name: str) -> str | None:
    """``LZ4Compressor`` for both ``LZ4Compressor`` and its qualified name; None for other packages.

    Cassandra prefixes names without a dot with its own package
    (CompressionParams.parseCompressorClass), so only those two spellings mean its own compressors.
    """
    if "." not in class_name:
        return class_name
    if class_name.startswith(_PACKAGE_PREFIX) and "." not in class_name[len(_PACKAGE_PREFIX) :]:
        return class_name[len(_PACKAGE_PREFIX) :]
    return None


def decompressor_for(class_name: str) -> Decompressor:
    """The decoder for a header's compressionClass; CodecError if unknown or not installed."""
    short = short_class_name(class_name)
    factory = _FACTORIES.get(short) if short is not None else None
    if factory is None:
        raise CodecError(f"unknown commit-log compressor class {class_name!r}")
    return factory()


def _checked(name: str, data: bytes, expected: int) -> bytes:
    if len(data) != expected:
        raise DecompressionError(
            f"{name} block decoded to {len(data)} bytes, section announced {expected}"
        )
    return data


def _cramjam(class_name: str) -> ModuleType:
    try:
        import cramjam
    except ImportError as exc:
        raise CodecError(
            f"{class_name} segments need the 'cramjam' package (pip install cramjam)",
            missing_package="cramjam",
        ) from exc
    return cramjam


def _lz4() -> Decompressor:
    cramjam = _cramjam("LZ4Compressor")

    def decompress(block: bytes, expected: int) -> bytes:
        if expected == 0:
            return b""
        if len(block) < 4:
            raise DecompressionError(f"LZ4 block of {len(block)} bytes has no length prefix")
        # The little-endian prefix is the compressor's own copy of the length; a disagreement with
        # the (big-endian) section header means one of them is corrupt.
        prefixed = int.from_bytes(block[:4], "little")
        if prefixed != expected:
            raise DecompressionError(
                f"LZ4 length prefix says {prefixed} bytes, section announced {expected}"
            )
        try:
            data = bytes(cramjam.lz4.decompress_block(block[4:], output_len=expected))
        except cramjam.DecompressionError as exc:
            raise DecompressionError(f"LZ4 block does not decode: {exc}") from exc
        return _checked("LZ4", data, expected)

    return decompress


def _snappy() -> Decompressor:
    cramjam = _cramjam("SnappyCompressor")

    def decompress(block: bytes, expected: int) -> bytes:
        if expected == 0:
            return b""
        try:
            data = bytes(cramjam.snappy.decompress_raw(block))
        except cramjam.DecompressionError as exc:
            raise DecompressionError(f"Snappy block does not decode: {exc}") from exc
        return _checked("Snappy", data, expected)

    return decompress


def _zstd() -> Decompressor:
    cramjam = _cramjam("ZstdCompressor")

    def decompress(block: bytes, expected: int) -> bytes:
        if expected == 0:
            return b""
        try:
            data = bytes(cramjam.zstd.decompress(block, output_len=expected))
        except cramjam.DecompressionError as exc:
            raise DecompressionError(f"Zstd frame does not decode: {exc}") from exc
        return _checked("Zstd", data, expected)

    return decompress


def _deflate() -> Decompressor:
    def decompress(block: bytes, expected: int) -> bytes:
        # DeflateCompressor writes nothing at all for an empty input (Deflater.needsInput()).
        if expected == 0:
            return b""
        inflater = zlib.decompressobj()
        try:
            # One byte more than announced so that an over-long stream is seen, not cut silently.
            data = inflater.decompress(block, expected + 1)
        except zlib.error as exc:
            raise DecompressionError(f"Deflate stream does not decode: {exc}") from exc
        return _checked("Deflate", data, expected)

    return decompress


def _noop() -> Decompressor:
    def decompress(block: bytes, expected: int) -> bytes:
        return _checked("Noop", bytes(block), expected)

    return decompress


_FACTORIES: dict[str, Callable[[], Decompressor]] = {
    "LZ4Compressor": _lz4,
    "SnappyCompressor": _snappy,
    "DeflateCompressor": _deflate,
    "ZstdCompressor": _zstd,
    "NoopCompressor": _noop,
}
