"""Dead letters are kept whole: every field, the raw bytes, one JSON line each, on disk."""

from __future__ import annotations

import base64
import json

from bytewax.testing import run_main

from connectors.cassandra.events import Position, UndecodableUpdate
from connectors.cassandra.segment import ErrorKind, ReadError
from connectors.dead_letter import DeadLetterSink, to_line


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


def _unreadable(partition_key, cells):
    import uuid

    from connectors.cassandra.events import ChangeEvent, ChangeKind
    from operators.readback import UnreadableChange

    event = ChangeEvent("n1", Position(3, 77), 0, "ks", "gone", uuid.UUID(int=5),
                        ChangeKind.UPSERT, partition_key, {}, cells, None, None, False, None,
                        None, b"\x01")
    return UnreadableChange(event, "table dropped")


def test_values_json_has_no_form_for_are_kept_and_named():
    """A dropped table's change is dead-lettered whole: a varint beyond 64 bits (which orjson
    refused, failing the sink, again at every replay), NaN and infinities (written as null), a
    decimal, a set and a map with non-text keys (written as their repr, or keys as text), and
    the cells' fields (written as bare lists) each keep what they were."""
    import datetime
    from decimal import Decimal

    from connectors.cassandra.events import Cell, CellElement, ComplexCell
    from connectors.dead_letter import to_line

    cells = {"big": Cell(-2**70, 10), "nan": Cell(float("nan"), 11),
             "inf": Cell(float("-inf"), 12), "price": Cell(Decimal("1.50"), 13),
             "tags": Cell(frozenset({"a"}), 14), "counts": Cell({1: "one"}, 15),
             "at": Cell(datetime.datetime(1969, 7, 20, 20, 17), 16),
             "list": ComplexCell(None, (CellElement(7, "seven", 20),))}
    line = json.loads(to_line(_unreadable({"k": 2**64}, cells)))
    assert line["type"] == "UnreadableChange" and line["reason"] == "table dropped"
    event = line["event"]
    assert event["partition_key"] == {"k": {"int": str(2**64)}}
    assert event["position"] == {"segment_id": 3, "offset": 77}
    got = event["cells"]
    assert got["big"] == {"value": {"int": str(-2**70)}, "timestamp": 10, "ttl": 0,
                          "local_deletion_time": None, "deleted": False}
    assert got["nan"]["value"] == {"float": "nan"}
    assert got["inf"]["value"] == {"float": "-inf"}
    assert got["price"]["value"] == {"decimal": "1.50"}
    assert got["tags"]["value"] == {"set": ["a"]}
    assert got["counts"]["value"] == {"map": [[1, "one"]]}
    assert got["at"]["value"] == {"datetime": "1969-07-20T20:17:00"}
    assert got["list"]["elements"][0]["path"] == 7
    assert to_line(_unreadable({"k": 2**64 - 1}, {})).count(b"18446744073709551615") == 1


def test_text_json_cannot_take_is_kept_as_its_bytes_and_the_rest_as_a_repr(tmp_path):
    """Text that is not valid Unicode (a lone surrogate) stopped orjson: it goes as its bytes.
    A record orjson still refuses is written as its repr, with the reason, and the batch's
    other records are written."""
    class Opaque:
        def __repr__(self) -> str:
            return "Opaque()"

    part = DeadLetterSink(tmp_path).build("dlq", 0, 1)
    part.write_batch([_unreadable({"k": "a\ud800"}, {}), _unreadable({"k": 1}, {})])
    part.close()
    first, second = (json.loads(line) for line in
                     (tmp_path / "dead-letter-0.jsonl").read_text().splitlines())
    kept = first["event"]["partition_key"]["k"]["text_surrogates_base64"]
    assert base64.b64decode(kept).decode("utf-8", "surrogatepass") == "a\ud800"
    assert second["event"]["partition_key"] == {"k": 1}
    line = json.loads(to_line(_unreadable({"k": 1}, {"weird": Opaque()})))
    assert line["event"]["cells"]["weird"] == {"repr": "Opaque()"}
    # A map keyed by such text goes as pairs, each key as its bytes.
    line = json.loads(to_line(_unreadable({"k": 1}, {"m": {"b\udc80": 1}})))
    (pair,) = line["event"]["cells"]["m"]["map"]
    assert base64.b64decode(pair[0]["text_surrogates_base64"]).decode(
        "utf-8", "surrogatepass") == "b\udc80" and pair[1] == 1


def test_a_line_left_unfinished_is_ended_before_the_next(tmp_path):
    """A crash (or a full disk) mid-write leaves a fragment without its newline: the replayed
    record must not be glued to it, or the only whole copy is an unreadable line."""
    (tmp_path / "dead-letter-0.jsonl").write_bytes(b'{"type":"Und')
    part = DeadLetterSink(tmp_path).build("dlq", 0, 1)
    part.write_batch([_unreadable({"k": 1}, {})])
    part.close()
    fragment, record = (tmp_path / "dead-letter-0.jsonl").read_text().splitlines()
    assert fragment == '{"type":"Und'
    assert json.loads(record)["event"]["partition_key"] == {"k": 1}
    # A file ending whole is left as it is.
    part = DeadLetterSink(tmp_path).build("dlq", 0, 1)
    part.close()
    assert len((tmp_path / "dead-letter-0.jsonl").read_text().splitlines()) == 2


def test_a_new_file_and_its_directories_are_named_durably(tmp_path, monkeypatch):
    """The batch's fsync makes the data durable, not the new file's name: a power loss could
    drop the whole file (the only copy, once its segment is deleted). Each directory made for
    it is synced into its parent too."""
    import os

    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    DeadLetterSink(tmp_path / "a" / "b").build("dlq", 0, 1).close()
    assert synced == [str(tmp_path), str(tmp_path / "a"), str(tmp_path / "a" / "b")]
    synced.clear()
    DeadLetterSink(tmp_path / "a" / "b").build("dlq", 0, 1).close()  # nothing new: no sync
    assert synced == []


def test_a_name_that_could_not_be_made_durable_is_not_left_behind(tmp_path, monkeypatch):
    """A directory fsync refused (some network filesystems) left the new file or folder in
    place: the next start found it made, skipped the sync and went on as if durable."""
    import os

    import pytest

    def refused(fd: int) -> None:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "fsync", refused)
    with pytest.raises(OSError, match="Invalid argument"):
        DeadLetterSink(tmp_path / "new").build("dlq", 0, 1)
    assert not (tmp_path / "new").exists()
    (tmp_path / "there").mkdir()
    with pytest.raises(OSError, match="Invalid argument"):
        DeadLetterSink(tmp_path / "there").build("dlq", 0, 1)
    assert list((tmp_path / "there").iterdir()) == []
