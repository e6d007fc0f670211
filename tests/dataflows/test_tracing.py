"""OpenTelemetry spans: one per batch per step, counts that add up, off unless configured."""

from __future__ import annotations

import json

import pytest
from bytewax.testing import run_main
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from connectors import tracing
from dataflows.flow import build
from dataflows.runtime import Runtime
from tests.dataflows.pipeline_files import (
    captured_table,
    postgres_destination,
    wait_durable,
)
from tests.dataflows.test_flow_fanout import COLUMN_RULES


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    tracing.configure(exporter=exporter)
    yield exporter
    tracing.turn_off()


def test_off_unless_configured_and_a_bad_setting_names_the_variable(tmp_path):
    tracing.turn_off()  # whatever an earlier test left
    tracing.configure({})
    assert not tracing.tracer().start_span("x").is_recording()
    with pytest.raises(ValueError, match="CDC_TRACES must be console, file:<path> or otlp"):
        tracing.configure({"CDC_TRACES": "jaeger"})


def test_spans_go_to_a_json_lines_file(tmp_path):
    path = tmp_path / "spans.jsonl"
    tracing.configure({"CDC_TRACES": f"file:{path}"})
    try:
        with tracing.tracer().start_as_current_span("mask") as span:
            span.set_attribute("operations", 3)
        tracing.flush()
    finally:
        tracing.turn_off()
    (line,) = path.read_text().splitlines()
    assert json.loads(line)["name"] == "mask"
    assert json.loads(line)["attributes"] == {"operations": 3}


def test_each_step_of_a_run_makes_spans_whose_counts_add_up(
    tmp_path, spans, cassandra_clusters, cassandra_keyspace, postgres_schema, openbao_env
):
    table = captured_table(
        cassandra_keyspace, cassandra_clusters,
        "CREATE TABLE {ks}.patients (id int PRIMARY KEY, first_name text, email text, "
        "diagnosis text, weight double, marker text) WITH cdc = true")
    sess, ks = table.session, table.keyspace
    for i in range(250):
        sess.execute(f"INSERT INTO {ks}.patients (id, first_name, email) VALUES (%s, %s, %s)",
                     (i, f"N{i}", f"p{i}@example.org"))
    sess.execute(f"INSERT INTO {ks}.patients (id, marker) VALUES (1000, 'end-of-load')")
    wait_durable(table.store, table.start, b"end-of-load")
    settings = table.settings(
        tmp_path, openbao_env, {"patients": COLUMN_RULES},
        [postgres_destination(postgres_schema, openbao_env["BAO_CACERT"])],
        batching={"max_records": 100}, spool_dir=str(tmp_path / "spool"))
    run_main(build(settings, runtime=Runtime(settings), until_caught_up=True))
    tracing.flush()

    by_name: dict[str, list] = {}
    for span in spans.get_finished_spans():
        by_name.setdefault(span.name, []).append(dict(span.attributes))
    assert set(by_name) == {"capture.decode", "row_images", "mask", "sink.write"}
    events = sum(a["items"] for a in by_name["capture.decode"])
    assert events == 251 and len(by_name["capture.decode"]) >= 3  # batches of 100 entries
    assert sum(a["events"] for a in by_name["row_images"]) == 251
    # One-column keys: the bulk reads served (operators/image_batches.py).
    assert sum(a["partitions_at_once"] for a in by_name["row_images"]) > 0
    operations = sum(a["operations"] for a in by_name["row_images"])
    assert sum(a["operations"] for a in by_name["mask"]) == operations == 251
    assert sum(a["operations"] for a in by_name["sink.write"]) == 251
    assert {a["destination"] for a in by_name["sink.write"]} == {"cassandra_cdc.postgres"}
    assert all(a["attempts"] == 1 for a in by_name["sink.write"])
