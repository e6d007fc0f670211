"""The change digest, recomputed here from its documented canonical encoding.

MutationDecoder builds the digest bytes with shortcuts (a row's live-cell prefix packed once,
precomputed length prefixes for lengths below 256); this spells the encoding out field by field
and checks the decoder hashes exactly those bytes, around the 256-byte boundary and for live,
expiring and deleted cells and collection elements.
"""

from __future__ import annotations

import hashlib
import struct

import pytest

from connectors.cassandra.vint import encode_uvint
from tests.connectors.cassandra.mutation_writer import (
    WCell,
    WComplex,
    WRow,
    WUpdate,
    encode_mutation,
)
from tests.connectors.cassandra.test_mutation import decode, schema_of, wcol

TS = 1_730_000_000_000_000
LDT = 1_730_000_000


def _name(name: str) -> bytes:
    return struct.pack(">i", len(name)) + name.encode()


def _cell(ts: int, ttl: int, deleted: bool, raw: bytes) -> bytes:
    return struct.pack(">qi?i", ts, ttl, deleted, len(raw)) + raw


def _reference(table_id: bytes, key: bytes, ck_raw: bytes, liveness, simple, complex_):
    """digest_head + row head + cells in header order (simple columns, then complex ones)."""
    body = table_id + struct.pack(">i", len(key)) + key
    body += b"W" + struct.pack(">i", len(ck_raw)) + ck_raw
    body += b"l" if liveness is None else b"L" + struct.pack(">qi", *liveness)
    body += b"x"
    for name, (ts, ttl, deleted, raw) in simple:
        body += _name(name) + _cell(ts, ttl, deleted, raw)
    for name, deletion, elements in complex_:
        body += _name(name) + b"C" + (struct.pack(">q", deletion) if deletion is not None
                                      else b"-")
        for ts, ttl, deleted, path, raw in elements:
            body += _cell(ts, ttl, deleted, path) + struct.pack(">i", len(raw)) + raw
    return hashlib.blake2b(body, digest_size=16).digest()


@pytest.mark.parametrize("size", [0, 1, 127, 128, 255, 256, 300, 70000])
def test_digest_bytes_match_the_canonical_encoding(size: int) -> None:
    t = schema_of("dg", [("id", "int")], [("c", "text", "asc")],
                  [("note", "text"), ("qty", "int"), ("old", "text"),
                   ("items", "map<text, text>")])
    cols = [wcol(t, n) for n in ("note", "qty", "old", "items")]
    key = struct.pack(">i", 5)
    ck = b"k" * size
    big = b"v" * size
    rows = [
        # An INSERT: every cell live with the row's timestamp.
        (WRow([ck], {"note": WCell(big, TS), "qty": WCell(struct.pack(">i", 7), TS),
                     "old": WCell(b"", TS),
                     "items": WComplex((TS - 1, LDT), [(big + b"p", WCell(big, TS)),
                                                       (b"a", WCell(b"", TS))])},
              (TS, 0, None)),
         (TS, 0),
         [("note", (TS, 0, False, big)), ("qty", (TS, 0, False, struct.pack(">i", 7))),
          ("old", (TS, 0, False, b""))],
         [("items", TS - 1, [(TS, 0, False, big + b"p", big), (TS, 0, False, b"a", b"")])]),
        # An UPDATE: own timestamps, a TTL, a tombstone, no row liveness.
        (WRow([ck], {"note": WCell(big, TS + 5, ttl=60, ldt=LDT + 60),
                     "qty": WCell(None, TS + 6, ldt=LDT, deleted=True),
                     "items": WComplex(None, [(b"x" * size, WCell(b"y", TS + 7, ttl=30,
                                                                  ldt=LDT + 30))])}),
         None,
         [("note", (TS + 5, 60, False, big)), ("qty", (TS + 6, 0, True, b""))],
         [("items", None, [(TS + 7, 30, False, b"x" * size, b"y")])]),
    ]
    for row, liveness, simple, complex_ in rows:
        raw = encode_mutation([WUpdate(t.id, key, regulars=cols, clustering_fixed=[-1],
                                       unfiltereds=[row])])
        out = decode([t], raw)
        assert out.errors == []
        [event] = out.events
        # The clustering bytes: header (an empty value has its "empty" bit and no bytes), value.
        ck_raw = b"\x01" if size == 0 else b"\x00" + encode_uvint(size) + ck
        assert event.digest == _reference(t.id.bytes, key, ck_raw, liveness, simple, complex_)
