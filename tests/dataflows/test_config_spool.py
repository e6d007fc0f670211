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
