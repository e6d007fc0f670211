"""Dead letters are kept whole: every field, the raw bytes, one JSON line each, on disk."""

from __future__ import annotations

import base64
import json

from bytewax.testing import run_main

from connectors.cassandra.events import Position, UndecodableUpdate
from connectors.cassandra.segment import ErrorKind, ReadError
from connectors.dead_letter import DeadLetterSink


def test_error_records_are_written_whole_as_json_lines(tmp_path):
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSource

    raw = bytes(range(256))
    records = [
        UndecodableUpdate("node1", Position(17, 4096), "unknown table id 1234", raw,
                          update_index=0, mutation_offset=1),
        ReadError("/x/CommitLog-7-17.log", 17, 100, 100, ErrorKind.ENTRY_CRC,
                  "entry CRC mismatch", b"\x00\xff", 130),
    ]
    flow = Dataflow("dlq")
    op.output("out", op.input("in", flow, TestingSource(records)),
              DeadLetterSink(tmp_path / "dlq"))
    run_main(flow)

    lines = [json.loads(line) for path in sorted((tmp_path / "dlq").glob("*.jsonl"))
             for line in path.read_text().splitlines()]
    assert [line["type"] for line in lines] == ["UndecodableUpdate", "ReadError"]
    first, second = lines
    assert first["node"] == "node1" and first["position"] == {"segment_id": 17, "offset": 4096}
    assert first["reason"] == "unknown table id 1234"
    assert base64.b64decode(first["raw"]["base64"]) == raw  # nothing of the bytes is lost
    assert second["kind"] == "entry_crc" and second["resume_at"] == 130
    assert base64.b64decode(second["raw"]["base64"]) == b"\x00\xff"


def test_dead_letters_are_the_owners_only(tmp_path):
    """They hold clear data (taken before masking): a new directory 0700, every file 0600,
    one an older run left with the default mode as well."""
    import os
    import stat

    from connectors.dead_letter import DeadLetterSink

    old = os.umask(0o022)
    try:
        folder = tmp_path / "dlq"
        folder.mkdir()
        left = folder / "dead-letter-1.jsonl"
        left.write_bytes(b"")  # 0644, as before
        for worker in (0, 1):
            part = DeadLetterSink(folder).build("dlq", worker, 2)
            part.write_batch([UndecodableUpdate("n", Position(1, 2), "why", b"clear data",
                                                update_index=0, mutation_offset=0)])
            part.close()
        fresh = tmp_path / "fresh"
        DeadLetterSink(fresh).build("dlq", 0, 1).close()
    finally:
        os.umask(old)
    for path in (folder / "dead-letter-0.jsonl", left):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
