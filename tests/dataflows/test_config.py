"""The configuration file: a good one loads; a bad one gets one message naming the key."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from dataflows.config import load, parse
from operators.masking.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "pipeline.example.json"


@pytest.fixture
def example() -> dict:
    return json.loads(EXAMPLE.read_text())


def test_the_shipped_example_is_valid():
    settings = load(EXAMPLE)
    assert settings.cassandra.nodes[0].name == "c7-node1"
    relative = "../.stack/cassandra/c7/node1/cdc_raw"  # relative to the file, not the cwd
    assert settings.cassandra.nodes[0].cdc_raw == EXAMPLE.parent / relative
    assert settings.destinations[0].kind == "postgres"
    assert settings.batching.max_records == 1000
    assert settings.cassandra.password.startswith("openbao:")


def test_a_node_may_start_at_a_saved_cursor(example):
    from connectors.cassandra.tail import Cursor

    example["cassandra"]["nodes"][0]["start_at"] = {"segment_id": 17, "offset": 4096}
    assert parse(example).cassandra.nodes[0].start_at == Cursor(17, 4096)
    example["cassandra"]["nodes"][0]["start_at"] = {"segment": 17}
    with pytest.raises(ConfigError, match=r"nodes\[0\]\.start_at\.segment_id: is required"):
        parse(example)


def test_batches_default_to_the_most_the_issue_allows(example):
    # 1000 ran the backlog benchmark 7-18% faster than 500 (dataflows/config.py).
    del example["batching"]["max_records"]
    assert parse(example).batching.max_records == 1000


def test_the_path_comes_from_the_environment(monkeypatch, tmp_path, example):
    chosen = tmp_path / "mine.json"
    example["batching"]["max_records"] = 200
    chosen.write_text(json.dumps(example))
    monkeypatch.setenv("CDC_PIPELINE_CONFIG", str(chosen))
    assert load().batching.max_records == 200


@pytest.mark.parametrize(("change", "path", "problem"), [
    (lambda d: d["cassandra"].update(consistency="QUORUMS"), "pipeline.cassandra.consistency",
     "'QUORUMS' is not one of ONE"),
    (lambda d: d["cassandra"].update(password="hunter2-literal"), "pipeline.cassandra.password",
     "must be a secret reference"),
    (lambda d: d["cassandra"].pop("keyspaces"), "pipeline.cassandra.keyspaces", "is required"),
    (lambda d: d["batching"].update(max_records=5000), "pipeline.batching.max_records",
     "5000 is out of range: must be between 100 and 1000"),
    (lambda d: d["batching"].update(max_recrods=200), "pipeline.batching.max_recrods",
     "is not a known key"),
    (lambda d: d["cassandra"]["nodes"].append(dict(d["cassandra"]["nodes"][0])),
     "pipeline.cassandra.nodes[1].name", "is used twice"),
    (lambda d: d["cassandra"]["nodes"][0].update(cdc_rwa="x"),
     "pipeline.cassandra.nodes[0].cdc_rwa", "is not a known key"),
    (lambda d: d["cassandra"].update(tables=["other.t"]), "pipeline.cassandra.tables[0]",
     "keyspace 'other' is not in pipeline.cassandra.keyspaces"),
    (lambda d: d["destinations"][0].update(kind="mysql"), "pipeline.destinations[0].kind",
     "'mysql' is not one of postgres, clickhouse, timescale"),
    (lambda d: d["destinations"][0].update(port="54329"), "pipeline.destinations[0].port",
     "must be an integer, not str"),
    (lambda d: d.update(destinations=[]), "pipeline.destinations", "at least 1"),
    (lambda d: d["cassandra"].update(start_from="now"), "pipeline.cassandra.start_from",
     "'now' is not one of earliest, latest"),
    # Refused here, not when a partition first resolves it (after the flow has started).
    (lambda d: d["cassandra"].update(password="openbao:cdc/cassandra"),
     "pipeline.cassandra.password", "needs a path and a field: openbao:path#field"),
    (lambda d: d["destinations"][0].update(password="vault:#password"),
     "pipeline.destinations[0].password", "needs a path and a field: vault:path#field"),
])
def test_a_bad_file_names_the_key_and_the_problem(example, change, path, problem):
    broken = copy.deepcopy(example)
    change(broken)
    with pytest.raises(ConfigError) as error:
        parse(broken)
    assert error.value.path == path
    assert problem in error.value.problem


def test_a_relative_secret_file_is_taken_from_the_configuration_folder(example, tmp_path):
    """As every other path in the file (its example says so), not from the working
    directory; an absolute one and the other schemes stay as written."""
    from dataflows.config import parse as parse_from

    example["cassandra"]["password"] = "file:secrets/cassandra"
    example["destinations"][0]["password"] = "file:/run/secrets/pg"
    settings = parse_from(example, base=tmp_path)
    assert settings.cassandra.password == f"file:{tmp_path / 'secrets' / 'cassandra'}"
    assert settings.destinations[0].password == "file:/run/secrets/pg"


def test_a_literal_secret_is_never_echoed(example):
    example["destinations"][0]["password"] = "S3cr3t-Pa55word"
    with pytest.raises(ConfigError) as error:
        parse(example)
    assert "S3cr3t" not in str(error.value)


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the configuration"):
        load(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"cassandra": {,}}')
    with pytest.raises(ConfigError, match="not valid JSON: .* line 1"):
        load(broken)
    twice = tmp_path / "twice.json"
    twice.write_text('{"batching": {}, "batching": {}}')
    with pytest.raises(ConfigError, match="appears twice"):
        load(twice)


def test_destination_options_are_checked_when_the_flow_is_built(example):
    from dataflows.flow import _destination_sink, build
    from dataflows.runtime import Runtime

    example["destinations"][0]["options"]["batch"] = 5
    with pytest.raises(ConfigError, match=r"destinations.postgres.options.batch: is not a known"):
        build(parse(example, base=EXAMPLE.parent))
    del example["destinations"][0]["options"]["batch"]
    for bad in (5, "50", True):
        example["destinations"][0]["options"]["fillfactor"] = bad
        with pytest.raises(ConfigError, match=rf"postgres.options.fillfactor: .*fillfactor "
                                              rf"must be an integer within 10\.\.100, "
                                              rf"not {bad!r}"):
            build(parse(example, base=EXAMPLE.parent))
    example["destinations"][0]["options"]["schema"] = ""
    with pytest.raises(ConfigError, match=r"postgres.options.schema: .*schema must be a non-empty"):
        build(parse(example, base=EXAMPLE.parent))
    example["destinations"][0]["options"]["schema"] = "s" * 64
    with pytest.raises(ConfigError, match=r"postgres.options.schema: .*longer than 63 bytes"):
        build(parse(example, base=EXAMPLE.parent))
    example["destinations"][0]["options"].update(fillfactor=50, schema="cdc")
    parsed = parse(example, base=EXAMPLE.parent)
    build(parsed)  # accepted
    sink = _destination_sink(parsed.destinations[0], Runtime(parsed))
    assert sink._settings.fillfactor == 50  # noqa: SLF001 - what reached the sink
    example["destinations"][0].update(kind="timescale", options={"when_missing": "plain"})
    with pytest.raises(ConfigError, match=r"options.time_columns: is required"):
        build(parse(example, base=EXAMPLE.parent))
    example["destinations"][0]["options"].update(time_columns={"clinic.vitals": "taken_at"},
                                                 fillfactor=50)
    with pytest.raises(ConfigError, match=r"options.fillfactor: is not a known option"):
        build(parse(example, base=EXAMPLE.parent))
    del example["destinations"][0]["options"]["fillfactor"]
    example["destinations"][0]["options"]["schema"] = 5  # a TimescaleDB sink's schema too
    with pytest.raises(ConfigError, match=r"postgres.options.schema: .*schema must be a non-empty"):
        build(parse(example, base=EXAMPLE.parent))


def test_clickhouse_options_are_checked_when_the_flow_is_built(example):
    from dataflows.flow import _destination_sink, build
    from dataflows.runtime import Runtime

    example["destinations"][0].update(kind="clickhouse", options={"schema": "cdc"})
    with pytest.raises(ConfigError, match=r"options.schema: is not a known option"):
        build(parse(example, base=EXAMPLE.parent))
    for bad in (-1, "1", True, 0.01):
        example["destinations"][0]["options"] = {"progress_interval": bad}
        with pytest.raises(ConfigError, match=rf"postgres.options.progress_interval: .*"
                                              rf"progress_interval must be 0 \(after every "
                                              rf"batch\) or a number of seconds within "
                                              rf"0\.1\.\.3600, not {bad!r}"):
            build(parse(example, base=EXAMPLE.parent))
    example["destinations"][0]["options"] = {"progress_interval": 0.5}
    parsed = parse(example, base=EXAMPLE.parent)
    sink = _destination_sink(parsed.destinations[0], Runtime(parsed))
    assert sink._settings.progress_interval == 0.5  # noqa: SLF001 - what reached the sink
    example["destinations"][0]["options"] = {}
    parsed = parse(example, base=EXAMPLE.parent)
    sink = _destination_sink(parsed.destinations[0], Runtime(parsed))
    assert sink._settings.progress_interval == 1.0  # noqa: SLF001 - the default


def test_expiry_entries_of_a_table_never_known_probe_the_schema_once_per_interval(example):
    """The expiry source's lookup (Runtime._table_by_id) asks the registry about that id: an
    hour's keyless entries of a dropped table cost one schema probe, not one each."""
    import uuid

    from connectors.cassandra.schema import SchemaRegistry
    from dataflows.runtime import Runtime
    from tests.connectors.cassandra.test_schema import FakeFetch, rows
    from tests.manual_clock import ManualClock

    probes = {"count": 0}

    def probe() -> int:
        probes["count"] += 1
        return 1

    registry = SchemaRegistry(FakeFetch(rows()), min_refresh_interval=5, clock=ManualClock(),
                              schema_version=probe)
    registry.load()
    loaded = probes["count"]  # (the load reads the version it read)
    runtime = Runtime(parse(example, base=EXAMPLE.parent))
    runtime.__dict__["schemas"] = registry  # the cached property, without a Cassandra session
    gone = uuid.uuid1()
    for _ in range(5):
        assert runtime._table_by_id(gone) is None  # noqa: SLF001 - the expiry source's lookup
    assert probes["count"] == loaded + 1


def test_the_recovery_directory_is_the_key_or_bytewax_s_variable(example, monkeypatch, tmp_path):
    monkeypatch.delenv("BYTEWAX_RECOVERY_DIRECTORY", raising=False)
    assert parse(example).recovery_directory is None  # then consumed segments stay
    monkeypatch.setenv("BYTEWAX_RECOVERY_DIRECTORY", str(tmp_path / "store"))
    assert parse(example).recovery_directory == tmp_path / "store"
    example["recovery_directory"] = str(tmp_path / "store")
    assert parse(example).recovery_directory == tmp_path / "store"
    example["recovery_directory"] = str(tmp_path / "other")
    with pytest.raises(ConfigError, match=r"pipeline\.recovery_directory: .*BYTEWAX_RECOVERY"):
        parse(example)


def test_cdc_total_space_is_given_in_mebibytes(example):
    assert parse(example).cassandra.cdc_total_space == 1024 * 1024 * 1024  # the example's
    del example["cassandra"]["cdc_total_space_mb"]
    assert parse(example).cassandra.cdc_total_space is None  # unknown: no capacity gauge
    example["cassandra"]["cdc_total_space_mb"] = 0
    with pytest.raises(ConfigError, match=r"cdc_total_space_mb: 0 is out of range"):
        parse(example)


def test_a_destination_s_tables_are_captured_tables(example):
    example["destinations"][0]["tables"] = ["clinic.patients", "billing.invoices"]
    with pytest.raises(ConfigError, match=r"pipeline\.destinations\[0\]\.tables\[1\]: "
                                          r"keyspace 'billing' is not in"):
        parse(example)
    example["cassandra"]["tables"] = ["clinic.visits"]
    example["destinations"][0]["tables"] = ["clinic.patients"]
    with pytest.raises(ConfigError, match=r"tables\[0\]: 'clinic.patients' is not in "
                                          r"pipeline\.cassandra\.tables"):
        parse(example)
    example["destinations"][0]["tables"] = ["clinic.visits"]
    assert parse(example).destinations[0].tables == ("clinic.visits",)


def test_a_timescale_destination_receives_the_tables_with_a_time_column(example):
    from dataflows.flow import destination_tables

    example["destinations"][0].update(kind="timescale", options={
        "when_missing": "plain", "time_columns": {"clinic.visits": "at"}})
    assert destination_tables(parse(example).destinations[0]) == {"clinic.visits"}
    example["destinations"][0]["tables"] = ["clinic.visits", "clinic.patients"]
    with pytest.raises(ConfigError, match=r"destinations\.postgres\.tables\[1\]: 'clinic."
                                          r"patients' has no time column in options\."):
        destination_tables(parse(example).destinations[0])
    example["destinations"][0]["kind"] = "postgres"
    assert destination_tables(parse(example).destinations[0]) == {
        "clinic.visits", "clinic.patients"}
    del example["destinations"][0]["tables"]
    assert destination_tables(parse(example).destinations[0]) is None


@pytest.mark.parametrize(("level", "warned"), [("ONE", True), ("LOCAL_ONE", True),
                                               ("QUORUM", False), ("LOCAL_QUORUM", False)])
def test_reading_back_below_quorum_is_warned_about(example, caplog, level, warned):
    """Accepted (a single-node cluster has nothing else), but a stale read then lasts until
    the row's next change: said once, when the flow is built."""
    import logging

    from dataflows.flow import build

    example["cassandra"]["consistency"] = level
    with caplog.at_level(logging.WARNING, logger="dataflows.flow"):
        build(parse(example, base=EXAMPLE.parent))
    said = [r.getMessage() for r in caplog.records if "cassandra.consistency" in r.getMessage()]
    assert said == ([f"cassandra.consistency is {level}: a row read back at it may not hold"
                     " the change it was read for yet (its replicas' copies are then dropped as"
                     " duplicates), and the row stays stale in every destination until its"
                     " next change; read at QUORUM or LOCAL_QUORUM (docs/adr/0003)"]
                    if warned else [])


def test_a_timescale_destinations_compression_reaches_its_sink(example):
    """Each entry, {"after": interval, "segment_by": [column, ...]}, became Compression(...)
    by position, which it refuses (keyword-only): every compression setting stopped the flow.
    A bad entry is named by its own path."""
    from dataflows.flow import _destination_sink, build
    from dataflows.runtime import Runtime

    def options(entry) -> dict:
        return {"when_missing": "plain", "time_columns": {"clinic.vitals": "taken_at"},
                "compression": {"clinic.vitals": entry}}

    example["destinations"][0].update(kind="timescale", options=options(
        {"after": "7 days", "segment_by": ["patient_id"]}))
    parsed = parse(example, base=EXAMPLE.parent)
    build(parsed)
    sink = _destination_sink(parsed.destinations[0], Runtime(parsed))
    (compression,) = sink.timescale.compression.values()  # what reached the sink
    assert (compression.after, compression.segment_by) == ("7 days", ("patient_id",))
    at = r"destinations\.postgres\.options\.compression\.clinic\.vitals"
    for entry, where, problem in [
            ({"segment_by": []}, r"\.after", "is required"),
            ({"after": "7 days", "segmentby": []}, r"\.segmentby", "is not a known key"),
            ({"after": "7 days", "segment_by": "patient_id"}, r"\.segment_by",
             "must be a list of column names"),
            ("7 days", "", "must be an object"),
            ({"after": "a week"}, "", "Compression.after")]:
        example["destinations"][0]["options"] = options(entry)
        with pytest.raises(ConfigError, match=at + where + ": " + problem):
            build(parse(example, base=EXAMPLE.parent))


def test_two_postgresql_destinations_may_not_share_tables(example):
    """A postgres and a timescale destination on one database and schema (both default to
    cdc) wrote the same tables: the TimescaleDB one made them hypertables and dropped their
    rows by its retention."""
    import copy

    from dataflows.flow import build

    postgres = example["destinations"][0]
    twin = copy.deepcopy(postgres)
    twin.update(name="series", kind="timescale",
                options={"when_missing": "plain", "time_columns": {"clinic.vitals": "taken_at"}})
    postgres["options"].pop("schema", None)
    example["destinations"] = [postgres, twin]
    with pytest.raises(ConfigError, match=r"destinations\.series\.options\.schema: 'cdc' in"
                                          r" database .* is destination 'postgres'"):
        build(parse(example, base=EXAMPLE.parent))
    postgres["tables"] = ["clinic.patients"]  # tables apart: accepted
    build(parse(example, base=EXAMPLE.parent))
    twin["options"]["schema"] = "series"
    postgres["tables"] = ["clinic.vitals"]
    build(parse(example, base=EXAMPLE.parent))  # another schema: accepted


def test_the_recovery_store_bytewax_run_was_given_by_its_flag_is_known(example, tmp_path,
                                                                         monkeypatch):
    """`bytewax.run ... -r DIR` sets no variable: segment deletion, the start pins and the
    initial load's ranges read no store then (the load's dropped tables then stopped every
    recovering start). The flag counts as the variable does."""
    from dataflows.config import with_recovery_from_arguments

    monkeypatch.delenv("BYTEWAX_RECOVERY_DIRECTORY", raising=False)
    settings = parse(example, base=EXAMPLE.parent)
    assert settings.recovery_directory is None
    for argv in (["dataflows.main", "-r", str(tmp_path), "-s", "10", "-b", "60"],
                 ["dataflows.main", f"--recovery-directory={tmp_path}"]):
        assert with_recovery_from_arguments(settings, argv).recovery_directory == tmp_path
    assert with_recovery_from_arguments(settings, ["dataflows.main"]) is settings
    example["recovery_directory"] = str(tmp_path / "other")
    configured = parse(example, base=EXAMPLE.parent)
    with pytest.raises(ConfigError, match=r"\(this key or BYTEWAX_RECOVERY_DIRECTORY\) but"
                                          " bytewax.run was given -r"):
        with_recovery_from_arguments(configured, ["dataflows.main", "-r", str(tmp_path)])
    assert with_recovery_from_arguments(
        configured, ["dataflows.main", "-r", str(tmp_path / "other")]) is configured


def test_comments_are_allowed_in_a_destinations_options_too(example):
    """`_comment` is ignored in every object of the file (its reference says so), but a
    destination's options were taken as they were: "is not a known option", or a table
    named _comment."""
    from dataflows.flow import build

    example["destinations"][0].update(kind="timescale", options={
        "_comment": "series", "when_missing": "plain",
        "time_columns": {"_comment": "per table", "clinic.vitals": "taken_at"},
        "compression": {"clinic.vitals": {"_comment": "a week", "after": "7 days"}}})
    settings = parse(example, base=EXAMPLE.parent)
    assert settings.destinations[0].options == {
        "when_missing": "plain", "time_columns": {"clinic.vitals": "taken_at"},
        "compression": {"clinic.vitals": {"after": "7 days"}}}
    build(settings)


def test_a_node_the_store_holds_a_position_of_must_stay_configured(example, tmp_path):
    """Bytewax refused to start with state for a partition nobody lists, in words about its
    routing map: the start now names the node and what to do."""
    from dataflows.flow import build
    from tests.recovery_stores import make_store

    make_store(tmp_path, ("cassandra_cdc.capture", "c7-node1"),
               ("cassandra_cdc.capture", "c7-node2"), ("cassandra_cdc.other", "c7-node3"))
    example["recovery_directory"] = str(tmp_path)
    with pytest.raises(ConfigError, match=r"cassandra\.nodes: the recovery store .* holds the"
                                          r" capture position of 'c7-node2', which is not"
                                          r" configured"):
        build(parse(example, base=EXAMPLE.parent))
    example["cassandra"]["nodes"].append({**example["cassandra"]["nodes"][0],
                                          "name": "c7-node2"})
    build(parse(example, base=EXAMPLE.parent))
