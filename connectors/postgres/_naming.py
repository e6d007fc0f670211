"""Destination names: "<keyspace>__<table>" plus suffixes, shortened to PostgreSQL's limit.

PostgreSQL silently truncates identifiers to 63 bytes (NAMEDATALEN - 1), so two long names
could collide. A name over 63 UTF-8 bytes is cut at a character boundary to 54 bytes and
suffixed with "_" and the first 8 hex digits of the BLAKE2b digest of the full name: stable
across processes and releases, and distinct for distinct full names in practice. Column names
follow the same rule.
"""

from __future__ import annotations

import hashlib

__all__ = ["MAX_IDENTIFIER_BYTES", "column_name", "table_names", "shorten"]

MAX_IDENTIFIER_BYTES = 63
_HASH_CHARS = 8


def shorten(name: str) -> str:
    """NAME if it fits in 63 bytes, else its truncation + "_" + 8 hex digits of its hash."""
    raw = name.encode()
    if len(raw) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.blake2b(raw, digest_size=16).hexdigest()[:_HASH_CHARS]
    head = raw[: MAX_IDENTIFIER_BYTES - _HASH_CHARS - 1].decode(errors="ignore")
    return f"{head}_{digest}"


def table_names(keyspace: str, table: str) -> tuple[str, str, str]:
    """(rows table, static companion, current view) of a Cassandra table."""
    base = f"{keyspace}__{table}"
    return shorten(base), shorten(f"{base}__static"), shorten(f"{base}__current")


def column_name(name: str) -> str:
    return shorten(name)
