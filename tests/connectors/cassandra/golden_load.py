"""Reading the golden corpus (see golden.py) back: segments, schema, and their decoded events."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from uuid import UUID

from connectors.cassandra.events import Position
from connectors.cassandra.mutation import MutationDecoder, messaging_version_for
from connectors.cassandra.schema import SchemaRows, StaticSchemas, build_schemas
from connectors.cassandra.segment import Entry
from connectors.cassandra.tail import LocalSegmentStore, poll
from tests.connectors.cassandra.golden import golden_dir


def unpack(version: int, into: Path) -> LocalSegmentStore:
    """The golden cdc_raw of VERSION as a directory a node could have left."""
    for path in golden_dir(version).iterdir():
        if path.name.endswith(".log.gz"):
            with gzip.open(path) as packed:
                (into / path.name.removesuffix(".gz")).write_bytes(packed.read())
        elif path.name.endswith("_cdc.idx"):
            shutil.copy(path, into / path.name)
    return LocalSegmentStore(into)


def schemas(*versions: int) -> StaticSchemas:
    """The golden keyspaces' schemas: of one cluster, or of several together. Each cluster is
    built on its own: both keyspaces are named "golden", only their table ids differ."""
    tables, ignored = [], []
    for version in versions:
        rows = json.loads((golden_dir(version) / "schema.json").read_text())
        for table in rows["tables"] + rows["all_tables"]:
            table["id"] = UUID(table["id"])
        built, skipped = build_schemas(SchemaRows(**rows))
        tables += built.values()
        ignored += skipped.values()
    return StaticSchemas(tables, ignored)


def read_all(store: LocalSegmentStore) -> list:
    records, cursor = [], None
    while True:
        batch = poll(store, cursor, max_records=1000)
        records += batch.records
        cursor = batch.position
        if batch.caught_up:
            return records


def decode_all(version: int, records: list):
    decoder = MutationDecoder(schemas(version), messaging_version=messaging_version_for(version),
                              node="golden")
    return [decoder.decode(r.mutation, Position(r.segment_id, r.end))
            for r in records if isinstance(r, Entry)]
