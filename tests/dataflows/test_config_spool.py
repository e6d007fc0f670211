"""The spool keys of the configuration (docs/adr/0006), and the sinks the flow builds with them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.spool import SpooledSink
from dataflows.config import load, parse
from dataflows.flow import _sink
from dataflows.runtime import Runtime
from operators.masking.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "pipeline.example.json"


@pytest.fixture
def example() -> dict:
    return json.loads(EXAMPLE.read_text())


def test_the_example_spools_every_destination():
    settings = load(EXAMPLE)
    assert settings.spool_dir == EXAMPLE.parent / "../.stack/spool"
    assert settings.spool_max_bytes == 1024 * 1024 * 1024
    assert all(d.spool for d in settings.destinations)


def test_the_spool_defaults_to_beside_the_dead_letters(example, tmp_path):
    for key in ("spool_dir", "spool_max_mb"):
        del example[key]
    del example["destinations"][0]["spool"]
    example["dead_letter_dir"] = str(tmp_path / "data" / "dead-letter")
    settings = parse(example, base=tmp_path)
    assert settings.spool_dir == tmp_path / "data" / "spool"
    assert settings.spool_max_bytes == 1024 * 1024 * 1024
    assert settings.destinations[0].spool is True


def test_the_default_spool_and_audit_folders_are_beside_the_dead_letters_from_any_base(
        example):
    """A configuration read through a relative path (the default `config/pipeline.json`):
    the defaults are beside the dead letters, not joined to the configuration's folder a
    second time (config/config/...), which moved the spool, and left its batches behind,
    when the same file was read by an absolute path."""
    for key in ("spool_dir", "audit_dir"):
        example.pop(key, None)
    example["dead_letter_dir"] = "../state/dead-letter"
    relative = parse(example, base=Path("config"))
    absolute = parse(example, base=Path("/srv/cdc/config"))
    assert relative.spool_dir == Path("config/../state/spool")
    assert relative.audit_dir == Path("config/../state/audit")
    assert absolute.spool_dir == Path("/srv/cdc/config/../state/spool")


@pytest.mark.parametrize(("where", "value", "message"), [
    ((), ("spool_max_mb", 0), r"pipeline\.spool_max_mb: 0 is out of range"),
    ((), ("spool_dir", ""), r"pipeline\.spool_dir: must be a non-empty string"),
    (("destinations", 0), ("spool", "yes"),
     r"pipeline\.destinations\[0\]\.spool: must be true or false"),
])
def test_bad_spool_keys_are_named(example, where, value, message):
    section = example
    for step in where:
        section = section[step]
    section[value[0]] = value[1]
    with pytest.raises(ConfigError, match=message):
        parse(example)


def test_the_flow_wraps_a_destination_unless_it_opts_out(example, tmp_path):
    example["spool_dir"] = str(tmp_path / "spool")
    example["spool_max_mb"] = 8
    settings = parse(example, base=EXAMPLE.parent)
    sink = _sink(settings.destinations[0], Runtime(settings))  # no I/O: nothing is built
    assert isinstance(sink, SpooledSink)
    assert sink.list_parts() == ["0", "1"] and sink._max_bytes == 8 * 1024 * 1024
    assert sink._directory == tmp_path / "spool"

    example["destinations"][0]["spool"] = False
    settings = parse(example, base=EXAMPLE.parent)
    assert not isinstance(_sink(settings.destinations[0], Runtime(settings)), SpooledSink)


def _spool_holding_a_batch(folder: Path) -> None:
    from connectors.spool import Spool

    spool = Spool(folder, max_bytes=1 << 20, segment_bytes=1 << 16)
    spool.append(b"a batch nobody drained")
    spool.close()


def test_a_spool_the_configuration_never_opens_stops_the_build(example, tmp_path):
    """Batches spooled for a destination partition the configuration no longer writes (a
    destination renamed, fewer partitions, its spool turned off) would never reach their
    destination: building the flow names them instead. Spools drained, or of partitions
    the configuration writes, are no reason to stop."""
    from connectors.spool import Spool
    from dataflows.flow import build

    example["spool_dir"] = str(tmp_path / "spool")
    name = example["destinations"][0]["name"]
    partitions = example["destinations"][0]["partitions"]
    ours = tmp_path / "spool" / f"cassandra_cdc.{name}"
    _spool_holding_a_batch(ours / "0")  # a partition the configuration writes: drained later
    drained = Spool(ours / str(partitions), max_bytes=1 << 20, segment_bytes=1 << 16)
    drained.close()  # a partition no longer written, but nothing left in it
    build(parse(example, base=EXAMPLE.parent))

    _spool_holding_a_batch(ours / str(partitions))  # one partition fewer than before
    with pytest.raises(ConfigError, match=rf"pipeline\.destinations: spooled batches that "
                                          rf"this configuration never writes: "
                                          rf"\S+/cassandra_cdc\.{name}/{partitions} \(\d+ bytes\)"):
        build(parse(example, base=EXAMPLE.parent))
    example["destinations"][0]["partitions"] = partitions + 1
    build(parse(example, base=EXAMPLE.parent))  # back to the configuration that spooled it

    example["destinations"][0]["name"] = "renamed"
    with pytest.raises(ConfigError, match=rf"cassandra_cdc\.{name}/0 \(\d+ bytes\), \S+"
                                          rf"cassandra_cdc\.{name}/{partitions} \(\d+ bytes\)"):
        build(parse(example, base=EXAMPLE.parent))
    example["destinations"][0]["name"] = name
    example["destinations"][0]["spool"] = False
    with pytest.raises(ConfigError, match=rf"cassandra_cdc\.{name}/0 \("):
        build(parse(example, base=EXAMPLE.parent))
