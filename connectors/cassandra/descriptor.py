"""The descriptor header at the start of every commit-log segment, and segment file names.

Layout (big-endian), as written by Cassandra's ``CommitLogDescriptor.writeHeader``::

    int32  version            7 (4.0/4.1, and 5.0 in CASSANDRA_4 compatibility mode) or 8 (5.0)
    int64  segment id
    uint16 paramLen
    bytes  paramLen bytes of UTF-8 JSON: "{}" or compressionClass/compressionParameters and,
           for encrypted segments, encCipher/encKeyAlias/encIV
    int32  crc

The CRC is CRC32 fed, each as 4 big-endian bytes, with: version, low 32 bits of the id, high 32
bits of the id, paramLen (as a 4-byte int, not the 2 bytes stored), then the JSON bytes.
The header occupies the same bytes in the file and in the logical (uncompressed) position space,
so ``header_length`` is the first sync marker's position in both.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from connectors.cassandra.errors import HeaderError

VERSION_40 = 7
VERSION_50 = 8
SUPPORTED_VERSIONS = frozenset({VERSION_40, VERSION_50})

# Messaging version of the mutation bytes per descriptor version
# (CommitLogDescriptor.getMessagingVersion).
_MESSAGING_VERSIONS = {6: 10, VERSION_40: 12, VERSION_50: 13}

_FIXED = struct.Struct(">iqH")  # version, id, paramLen
_CRC = struct.Struct(">I")
MAX_HEADER_LENGTH = _FIXED.size + 0xFFFF + _CRC.size

# Header parameter keys (CommitLogDescriptor, EncryptionContext).
COMPRESSION_CLASS_KEY = "compressionClass"
COMPRESSION_PARAMETERS_KEY = "compressionParameters"
ENCRYPTION_KEYS = ("encCipher", "encKeyAlias", "encIV")

_FILE_NAME = re.compile(r"CommitLog-(\d+)-(\d+)\.log")


@dataclass(frozen=True)
class CompressionSpec:
    """The compressor named by a segment header, as Cassandra wrote it (short or qualified name)."""

    class_name: str
    parameters: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SegmentDescriptor:
    """A parsed, CRC-checked segment header."""

    version: int
    segment_id: int
    parameters_json: str
    compression: CompressionSpec | None
    encryption_keys: tuple[str, ...]
    header_length: int

    @property
    def encrypted(self) -> bool:
        return bool(self.encryption_keys)

    @property
    def messaging_version(self) -> int:
        """Messaging-service version of the mutation bytes (12 for v7, 13 for v8)."""
        return _MESSAGING_VERSIONS[self.version]


def checksum_int(crc: int, value: int) -> int:
    """Continue a CRC32 over one int as FBUtilities.updateChecksumInt does (4 bytes, big-endian)."""
    return zlib.crc32((value & 0xFFFFFFFF).to_bytes(4, "big"), crc)


def id_checksum(segment_id: int) -> int:
    """CRC32 over the segment id as Cassandra feeds it: low 32 bits, then high 32 bits."""
    crc = checksum_int(0, segment_id & 0xFFFFFFFF)
    return checksum_int(crc, (segment_id >> 32) & 0xFFFFFFFF)


def header_checksum(version: int, segment_id: int, parameters: bytes) -> int:
    crc = checksum_int(0, version)
    crc = checksum_int(crc, segment_id & 0xFFFFFFFF)
    crc = checksum_int(crc, (segment_id >> 32) & 0xFFFFFFFF)
    crc = checksum_int(crc, len(parameters))
    return zlib.crc32(parameters, crc)


def parse_header(data: bytes) -> SegmentDescriptor:
    """Parse and CRC-check a header from the first bytes of a segment.

    ``data`` may be longer than the header (pass the start of the file). Raises HeaderError with
    kind "truncated", "crc" or "malformed". Version, encryption and compression are reported,
    not judged: refusing them is the reader's job, after the CRC has shown the bytes are real.
    """
    if len(data) < _FIXED.size:
        raise HeaderError("truncated", f"header needs {_FIXED.size} fixed bytes, found {len(data)}")
    version, segment_id, param_len = _FIXED.unpack_from(data, 0)
    header_length = _FIXED.size + param_len + _CRC.size
    if len(data) < header_length:
        raise HeaderError(
            "truncated",
            f"header announces {param_len} parameter bytes; only {len(data)} of "
            f"{header_length} header bytes present",
        )
    parameters = bytes(data[_FIXED.size : _FIXED.size + param_len])
    (stored,) = _CRC.unpack_from(data, _FIXED.size + param_len)
    computed = header_checksum(version, segment_id, parameters)
    if stored != computed:
        raise HeaderError(
            "crc", f"header CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
        )
    params = _decode_parameters(parameters)
    return SegmentDescriptor(
        version=version,
        segment_id=segment_id,
        parameters_json=parameters.decode("utf-8"),
        compression=_compression(params),
        encryption_keys=tuple(k for k in ENCRYPTION_KEYS if params.get(k) is not None),
        header_length=header_length,
    )


def _decode_parameters(parameters: bytes) -> dict[str, object]:
    # Cassandra writes "{}" when there is nothing to say; the CRC already passed, so anything that
    # is not a JSON object here was written that way, and we cannot know what it means.
    try:
        params = json.loads(parameters.decode("utf-8")) if parameters else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HeaderError("malformed", f"header parameters are not JSON: {exc}") from exc
    if not isinstance(params, dict):
        raise HeaderError(
            "malformed", f"header parameters are not a JSON object: {parameters[:80]!r}"
        )
    return params


def _compression(params: dict[str, object]) -> CompressionSpec | None:
    class_name = params.get(COMPRESSION_CLASS_KEY)
    if class_name is None:
        return None
    if not isinstance(class_name, str) or not class_name:
        raise HeaderError(
            "malformed", f"{COMPRESSION_CLASS_KEY} is not a class name: {class_name!r}"
        )
    raw = params.get(COMPRESSION_PARAMETERS_KEY) or {}
    if not isinstance(raw, dict):
        raise HeaderError("malformed", f"{COMPRESSION_PARAMETERS_KEY} is not an object: {raw!r}")
    return CompressionSpec(class_name, tuple(sorted((str(k), str(v)) for k, v in raw.items())))


def parse_segment_file_name(name: str) -> tuple[int, int] | None:
    """(descriptor version, segment id) from ``CommitLog-<version>-<id>.log``; else None."""
    match = _FILE_NAME.fullmatch(name)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def segment_file_name(version: int, segment_id: int) -> str:
    return f"CommitLog-{version}-{segment_id}.log"


def cdc_index_file_name(version: int, segment_id: int) -> str:
    return f"CommitLog-{version}-{segment_id}_cdc.idx"


def cdc_index_path(segment_path: str | Path) -> Path:
    """The _cdc.idx beside a segment: ``CommitLog-7-123.log`` -> ``CommitLog-7-123_cdc.idx``."""
    path = Path(segment_path)
    if not path.name.endswith(".log"):
        raise ValueError(f"not a commit-log segment file name: {path.name}")
    return path.with_name(path.name[: -len(".log")] + "_cdc.idx")
