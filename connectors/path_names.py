"""Configuration strings (step ids, partition and node names) as single path components."""

from __future__ import annotations

import re
import zlib

__all__ = ["path_component"]


def path_component(name: str) -> str:
    """NAME as one path component: itself when it is plain, else with its other characters
    replaced and a CRC32 of the whole name appended (two names stay two files)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return safe if safe == name and name not in (".", "..") else \
        f"{safe}-{zlib.crc32(name.encode()):08x}"
