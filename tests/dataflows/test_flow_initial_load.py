"""The whole flow with the initial load: rows written before the pipeline started (capture from
"latest") land in PostgreSQL, and changes made after the capture's cursor was fixed win over
the loaded images.

Oracle: Cassandra's SELECT through the same masking, row for row.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from bytewax.testing import run_main
from prometheus_client import REGISTRY
from psycopg import sql

from connectors.cassandra.tail import end_cursor
from dataflows.config import InitialLoadSettings, load, parse
from dataflows.flow import build
from dataflows.runtime import Runtime
from operators.masking.errors import ConfigError
from tests.dataflows.pipeline_files import (
    captured_table,
    cassandra_section,
    masking_policy,
    oracle_masker,
    postgres_destination,
    wait_durable,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "pipeline.example.json"

COLUMN_RULES = {
    "id": {"class": "none", "reason": "surrogate key, no personal data"},
    "label": {"class": "none", "reason": "test data"},
    "score": {"class": "none", "reason": "test data"},
    "marker": {"class": "none", "reason": "test sentinel"},
}
COLUMNS = ["id", "label", "score", "marker"]
ROWS = 120


def test_existing_rows_are_loaded_and_later_changes_win(
    tmp_path, cassandra_clusters, cassandra_keyspace, postgres_schema, openbao_env
):
    table = captured_table(
        cassandra_keyspace, cassandra_clusters,
        "CREATE TABLE {ks}.patients (id int PRIMARY KEY, label text, score int, "
        "marker text) WITH cdc = true")
    sess, ks, bare, info = table.session, table.keyspace, table.bare, table.info
    store, before = table.store, table.start
    insert = sess.prepare(f"INSERT INTO {ks}.patients (id, label, score) VALUES (?, ?, ?)")
    for i in range(ROWS):
        sess.execute(insert, (i, f"l{i}", i))
    # Durable before the flow is built: behind the capture's cursor, only the load brings them.
    loaded_marker = uuid.uuid4().hex
    sess.execute(f"INSERT INTO {ks}.patients (id, marker) VALUES (2000, %s)", (loaded_marker,))
    wait_durable(store, before, loaded_marker.encode())
    policy_file = tmp_path / "masking.json"
    policy_file.write_text(json.dumps(masking_policy(bare, {"patients": COLUMN_RULES})))
    cassandra = cassandra_section(info, bare, {"name": "c7-node1", "cdc_raw": str(store.directory)},
                                  openbao_env["BAO_CACERT"])
    settings = parse({
        "cassandra": {**cassandra, "start_from": "latest"},
        "initial_load": {"enabled": True, "splits": 4, "page_size": 25},
        "masking_policy": str(policy_file),
        "dead_letter_dir": str(tmp_path / "dead-letter"),
        "destinations": [postgres_destination(postgres_schema, openbao_env["BAO_CACERT"])],
    })
    runtime = Runtime(settings)
    start = end_cursor(store)
    # Building fixes the capture's cursor ("latest"); what is written from now on is captured.
    flow = build(settings, runtime=runtime, until_caught_up=True)

    sess.execute(f"UPDATE {ks}.patients SET score = -3 WHERE id = 3")
    sess.execute(f"DELETE FROM {ks}.patients WHERE id = 5")
    marker = uuid.uuid4().hex
    sess.execute(f"INSERT INTO {ks}.patients (id, marker) VALUES (1000, %s)", (marker,))
    wait_durable(store, start, marker.encode())
    run_main(flow)

    cassandra_rows = [{c: getattr(r, c) for c in COLUMNS}
                      for r in sess.execute(f"SELECT * FROM {ks}.patients")]
    masker = oracle_masker(settings)
    expected = sorted((tuple(r[c] for c in COLUMNS)
                       for r in masker.mask_rows(bare, "patients", cassandra_rows)), key=repr)
    from devstack import postgres

    with postgres.connect(role="admin") as conn:
        found = conn.execute(sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
            sql.Identifier(postgres_schema, f"{bare}__patients__current"))).fetchall()
        nodes = dict(conn.execute(sql.SQL(
            "SELECT id, _cdc_source_node FROM {}").format(
            sql.Identifier(postgres_schema, f"{bare}__patients"))).fetchall())
        progress = conn.execute(sql.SQL("SELECT DISTINCT node FROM {}").format(
            sql.Identifier(postgres_schema, "_cdc_progress"))).fetchall()
    assert sorted(found, key=repr) == expected
    assert len(found) == ROWS + 1  # ROWS written, one deleted, two marker rows
    by_id = {row[0]: row for row in found}
    assert 5 not in by_id and by_id[3][2] == -3 and by_id[1000][3] == marker
    # Untouched rows came from the load (the capture started after them). Rows 3 and 1000
    # came both ways with the same version (the load read them after the change): either
    # source may be the one stored. The capture did apply its changes (its progress row), and
    # the load records no commit-log progress.
    assert {nodes[i] for i in [*range(ROWS), 2000] if i not in (3, 5)} == {"initial-load"}
    assert progress == [("c7-node1",)]


def test_the_section_is_optional_and_validated():
    example = json.loads(EXAMPLE.read_text())
    assert load(EXAMPLE).initial_load == InitialLoadSettings(enabled=False, splits=16,
                                                             page_size=500)
    example.pop("initial_load", None)
    assert parse(example).initial_load == InitialLoadSettings()
    for section, message in [
        ({"enabled": "yes"}, r"pipeline\.initial_load\.enabled: must be true or false"),
        ({"splits": 0}, r"pipeline\.initial_load\.splits: 0 is out of range"),
        ({"page_size": 5}, r"pipeline\.initial_load\.page_size: 5 is out of range"),
        ({"split": 4}, r"pipeline\.initial_load\.split: is not a known key"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse({**example, "initial_load": section})
    assert parse({**example, "initial_load": {"enabled": True, "splits": 3}}).initial_load \
        == InitialLoadSettings(enabled=True, splits=3, page_size=500)


def test_a_table_switched_to_cdc_while_stopped_is_loaded_at_the_next_start(
    tmp_path, cassandra_clusters, cassandra_keyspace, postgres_schema, openbao_env
):
    """A table switched to cdc = true while the pipeline is stopped (or while a run that had
    begun its backfill crashed: the process's schema history, which saw the switch, is gone)
    has rows no change will ever bring. At the next start, resumed from the recovery store,
    its token ranges are partitions the store has no state for, so the initial load reads
    them: every row arrives, and the table loaded before is not read again."""
    from bytewax.recovery import RecoveryConfig, init_db_dir

    table = captured_table(
        cassandra_keyspace, cassandra_clusters,
        "CREATE TABLE {ks}.patients (id int PRIMARY KEY, label text, score int, "
        "marker text) WITH cdc = true")
    sess, ks, bare, info, store = (table.session, table.keyspace, table.bare, table.info,
                                   table.store)
    sess.execute(f"CREATE TABLE {ks}.late (id int PRIMARY KEY, label text, score int, "
                 "marker text) WITH cdc = false")
    for name in ("patients", "late"):
        insert = sess.prepare(f"INSERT INTO {ks}.{name} (id, label, score) VALUES (?, ?, ?)")
        for i in range(40):
            sess.execute(insert, (i, f"{name} {i}", i))
    # Durable before the first run starts: behind its cursor, only the load brings them.
    loaded_marker = uuid.uuid4().hex
    sess.execute(f"INSERT INTO {ks}.patients (id, marker) VALUES (2000, %s)", (loaded_marker,))
    wait_durable(store, table.start, loaded_marker.encode())
    policy_file = tmp_path / "masking.json"
    policy_file.write_text(json.dumps(masking_policy(
        bare, {"patients": COLUMN_RULES, "late": COLUMN_RULES})))
    cassandra = cassandra_section(info, bare, {"name": "c7-node1", "cdc_raw": str(store.directory)},
                                  openbao_env["BAO_CACERT"])
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    settings = parse({
        "cassandra": {**cassandra, "start_from": "latest"},
        "initial_load": {"enabled": True, "splits": 2, "page_size": 25},
        "masking_policy": str(policy_file),
        "dead_letter_dir": str(tmp_path / "dead-letter"),
        "recovery_directory": str(recovery),
        "destinations": [postgres_destination(postgres_schema, openbao_env["BAO_CACERT"])],
    })

    def run() -> None:
        run_main(build(settings, runtime=Runtime(settings), until_caught_up=True),
                 epoch_interval=None, recovery_config=RecoveryConfig(str(recovery)))

    def loaded(name: str) -> float:
        return REGISTRY.get_sample_value("cdc_initial_load_rows_total",
                                         {"table": f"{ks}.{name}"}) or 0.0

    run()  # loads patients; late is not captured yet (cdc = false)
    assert loaded("patients") == 41 and loaded("late") == 0
    from devstack import postgres

    with postgres.connect(role="admin") as conn:
        assert conn.execute("SELECT to_regclass(%s)", (
            f"{postgres_schema}.{bare}__late",)).fetchone()[0] is None  # nothing of late yet
    sess.execute(f"ALTER TABLE {ks}.late WITH cdc = true")
    sess.execute(f"UPDATE {ks}.patients SET score = -1 WHERE id = 1")
    # The marker is the last write: once it is durable, so is everything before it in the
    # node's commit log (waiting for a marker written before the update let the run below
    # catch up to a sync that did not hold the update yet).
    marker = uuid.uuid4().hex
    sess.execute(f"INSERT INTO {ks}.late (id, marker) VALUES (1000, %s)", (marker,))
    wait_durable(store, table.start, marker.encode())
    run()  # resumed: late's ranges are new partitions, patients' are done
    assert loaded("late") == 41  # every row it has when the load reads it, the marker too
    assert loaded("patients") == 41  # not read again

    masker = oracle_masker(settings)
    with postgres.connect(role="admin") as conn:
        for name, count in (("patients", 41), ("late", 41)):
            rows = [{c: getattr(r, c) for c in COLUMNS}
                    for r in sess.execute(f"SELECT * FROM {ks}.{name}")]
            expected = sorted((tuple(r[c] for c in COLUMNS)
                               for r in masker.mask_rows(bare, name, rows)), key=repr)
            found = conn.execute(sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
                sql.Identifier(postgres_schema, f"{bare}__{name}__current"))).fetchall()
            assert len(expected) == count
            assert sorted(found, key=repr) == expected, name
        sources = dict(conn.execute(sql.SQL(
            "SELECT id, _cdc_source_node FROM {}").format(
            sql.Identifier(postgres_schema, f"{bare}__patients"))).fetchall())
    # patients was loaded by the first run only: its one change came through the capture,
    # the rest kept the first load's rows (a second load would have left them as they were
    # too, so what shows it is that the change was not overwritten by a later load image).
    assert sources[1] == "c7-node1"
    assert {sources[i] for i in [*range(40), 2000] if i != 1} == {"initial-load"}
    # A table the load finished, dropped: the store still holds its ranges' state, which the
    # flow's load lists (by its step id in the store) and builds as finished. Bytewax refused
    # to start with state for a partition nobody listed.
    sess.execute(f"DROP TABLE {ks}.late")
    run()
    assert loaded("late") == 41 and loaded("patients") == 41  # nothing read again
