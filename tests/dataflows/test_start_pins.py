"""`start_from: "latest"` is fixed by the first start, in the recovery store
(connectors/cassandra/start_pins.py): a start that fails before its first commit and the next
one take the same position, so the writes in between are captured."""

from __future__ import annotations

import json
from pathlib import Path

from connectors.cassandra.tail import Cursor, LocalSegmentStore, end_cursor
from dataflows.config import parse
from dataflows.flow import _initial_cursors
from tests.connectors.cassandra.segment_writer import SegmentWriter

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "pipeline.example.json"


def _segment(cdc_raw: Path, segment_id: int) -> None:
    writer = SegmentWriter(segment_id, version=7, capacity=1 << 14)
    writer.add(b"a.............")
    offset = writer.sync()
    (cdc_raw / writer.file_name()).write_bytes(writer.data())
    (cdc_raw / writer.file_name().replace(".log", "_cdc.idx")).write_text(str(offset))


def _settings(tmp_path: Path, recovery: bool):
    config = json.loads(EXAMPLE.read_text())
    config["cassandra"].update(start_from="latest", nodes=[
        {"name": "node/1", "cdc_raw": str(tmp_path / "cdc_raw")}])
    if recovery:
        (tmp_path / "recovery").mkdir(exist_ok=True)
        config["recovery_directory"] = str(tmp_path / "recovery")
    return parse(config, base=EXAMPLE.parent)


def test_the_first_starts_latest_position_is_the_one_later_starts_take(tmp_path,
                                                                       monkeypatch) -> None:
    monkeypatch.delenv("BYTEWAX_RECOVERY_DIRECTORY", raising=False)
    cdc_raw = tmp_path / "cdc_raw"
    cdc_raw.mkdir()
    _segment(cdc_raw, 100)
    first = _initial_cursors(_settings(tmp_path, recovery=True))
    assert first == {"node/1": end_cursor(LocalSegmentStore(cdc_raw))}
    assert isinstance(first["node/1"], Cursor)

    _segment(cdc_raw, 101)  # written while the pipeline was down, before any commit
    moved = end_cursor(LocalSegmentStore(cdc_raw))
    assert moved != first["node/1"]
    assert _initial_cursors(_settings(tmp_path, recovery=True)) == first
    # Without a recovery store nothing resumes: every start takes the end as it is.
    assert _initial_cursors(_settings(tmp_path, recovery=False)) == {"node/1": moved}
    (pin,) = (tmp_path / "recovery").glob("cdc-start-latest-*.json")
    assert pin.name.startswith("cdc-start-latest-node_1-")  # a path component of its own
    assert [p.name for p in (tmp_path / "recovery").iterdir()] == [pin.name]


def test_a_partition_with_state_removes_its_pin(tmp_path, monkeypatch) -> None:
    """Once Bytewax has state for a node's partition the pin is of no more use: it goes, so a
    recovery store emptied later to start over takes the end of the log as it is then, not a
    months-old pin (whose segment may be gone)."""
    from connectors.cassandra.retention import RetentionSettings
    from connectors.cassandra.schema import StaticSchemas
    from connectors.cassandra.source import CdcSource, NodeSpec

    monkeypatch.delenv("BYTEWAX_RECOVERY_DIRECTORY", raising=False)
    cdc_raw = tmp_path / "cdc_raw"
    cdc_raw.mkdir()
    _segment(cdc_raw, 100)
    settings = _settings(tmp_path, recovery=True)
    initial = _initial_cursors(settings)
    source = CdcSource([NodeSpec("node/1", cdc_raw)], StaticSchemas, initial=initial,
                       retention=RetentionSettings(tmp_path / "recovery"))
    source.build_part("capture", "node/1", None).close()  # no state yet: the pin stays
    assert list((tmp_path / "recovery").glob("cdc-start-latest-*.json"))
    source.build_part("capture", "node/1", initial["node/1"]).close()
    assert not list((tmp_path / "recovery").glob("cdc-start-latest-*.json"))


def test_a_pin_that_does_not_read_back_names_its_file(tmp_path, monkeypatch) -> None:
    """A truncated or hand-edited pin stops the build naming the file and what to do, not
    with a bare JSONDecodeError or KeyError."""
    import pytest

    monkeypatch.delenv("BYTEWAX_RECOVERY_DIRECTORY", raising=False)
    cdc_raw = tmp_path / "cdc_raw"
    cdc_raw.mkdir()
    _segment(cdc_raw, 100)
    settings = _settings(tmp_path, recovery=True)
    _initial_cursors(settings)
    (pin,) = (tmp_path / "recovery").glob("cdc-start-latest-*.json")
    for damage in ('{"segment_id": 1', '{"offset": 0}'):
        pin.write_text(damage)
        with pytest.raises(ValueError, match=rf"start pin {pin} does not read back .*remove it"):
            _initial_cursors(settings)
