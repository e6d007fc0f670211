"""Exceptions of the commit-log framing layer.

Two families, on purpose:

- Refusals (``SegmentRefusedError`` and subclasses) are raised: the segment is well formed but this
  reader will never be able to read it without a change of code or configuration (encryption,
  an unknown descriptor version, an unknown or unavailable compressor). Retrying cannot help, so
  they stop the caller loudly and name the segment.
- Bad bytes (a CRC mismatch, a truncated section, an undecodable block) are NOT raised by the
  segment reader: they become ``ReadError`` records (see segment.py) so that a dead-letter branch
  can keep them and reading can continue where it safely can. ``HeaderError`` and
  ``DecompressionError`` below are the internal carriers of such problems; the reader turns them
  into records.
"""

from __future__ import annotations


class CommitLogError(Exception):
    """Base class of every error raised by connectors.cassandra's commit-log readers."""


class SegmentRefusedError(CommitLogError):
    """This segment cannot be read by this reader; the message names the segment and why."""

    def __init__(self, segment: str, reason: str) -> None:
        super().__init__(f"refusing commit-log segment {segment}: {reason}")
        self.segment = segment
        self.reason = reason


class EncryptedSegmentError(SegmentRefusedError):
    """The segment is encrypted (transparent data encryption); it needs the node's keystore."""


class UnsupportedSegmentError(SegmentRefusedError):
    """Unknown descriptor version or unknown compressor class."""


class CodecUnavailableError(SegmentRefusedError):
    """The compressor is known but the Python package that decodes it is not installed."""


class HeaderError(CommitLogError):
    """The descriptor header's bytes are bad (truncated, CRC mismatch, malformed parameters)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class DecompressionError(CommitLogError):
    """A compressed sync section could not be decoded to the length its header announced."""


class CodecError(CommitLogError):
    """A compressor class cannot be decoded here (unknown, or its package is missing).

    Raised by compression.py, which does not know the segment; the segment reader re-raises it as
    the matching SegmentRefusedError naming the segment.
    """

    def __init__(self, reason: str, *, missing_package: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.missing_package = missing_package


class CdcIndexError(CommitLogError):
    """A _cdc.idx file holds something that is neither a valid index nor a prefix of one."""
