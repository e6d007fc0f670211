"""Exactly-once effects under SIGKILL: the pipeline is killed at random moments, again and again,
while a workload runs; restarted from Bytewax's recovery store (sometimes with another worker
count), it must leave PostgreSQL equal to Cassandra through the same masking: no row missing,
extra or stale.

Row images heal a row at its next change, so a lost change only shows when it was the row's
last: part of the workload writes rows exactly once, spread over the whole run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
from psycopg import sql

from connectors.cassandra.tail import LocalSegmentStore, end_cursor
from dataflows.config import load
from dataflows.runtime import Runtime
from devstack.paths import REPO_ROOT
from tests.dataflows.pipeline_files import cassandra_section, masking_policy, postgres_destination

KILLS = 6
ROWS = 150
CONVERGE = 180.0  # seconds for PostgreSQL to catch up after the last restart

COLUMN_RULES = {
    "id": {"class": "none", "reason": "surrogate key, no personal data"},
    "first_name": {"class": "first_name", "strategy": "tokenize"},
    "email": {"class": "email", "strategy": "hmac"},
}
COLUMNS = ["id", "first_name", "email", "visits", "note"]


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    tmp_path, cassandra_clusters, cassandra_keyspace, postgres_schema, openbao_env
):
    rng = random.Random(20261126)
    sess, ks = cassandra_keyspace(7)
    bare = ks.strip('"')
    sess.execute(f"CREATE TABLE {ks}.patients (id int PRIMARY KEY, first_name text, email text, "
                 "visits int, note text) WITH cdc = true")
    sess.execute(f"GRANT SELECT ON KEYSPACE {ks} TO cdc_pipeline")
    info = cassandra_clusters[7]
    store = LocalSegmentStore(info.cdc_raw_dirs[0])
    start = end_cursor(store)

    (tmp_path / "masking.json").write_text(
        json.dumps(masking_policy(bare, "patients", COLUMN_RULES)))
    node = {"name": "c7-node1", "cdc_raw": str(store.directory)}
    if start is not None:
        node["start_at"] = {"segment_id": start.segment_id, "offset": start.offset}
    config = tmp_path / "pipeline.json"
    config.write_text(json.dumps({
        "cassandra": cassandra_section(info, bare, node, openbao_env["BAO_CACERT"]),
        "batching": {"max_records": 100},
        "masking_policy": str(tmp_path / "masking.json"),
        "dead_letter_dir": str(tmp_path / "dead-letter"),
        "destinations": [postgres_destination(postgres_schema, openbao_env["BAO_CACERT"])],
    }))
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "2"], check=True)
    env = {**os.environ, **openbao_env, "CDC_PIPELINE_CONFIG": str(config)}
    log = (tmp_path / "pipeline.log").open("ab")

    def launch(workers: int) -> subprocess.Popen:
        return subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "bytewax.run", "dataflows.main", "-w", str(workers),
             "-r", str(recovery), "-s", "1", "-b", "0"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    writing = threading.Event()
    writing.set()

    def workload() -> None:
        insert = sess.prepare(f"INSERT INTO {ks}.patients (id, first_name, email, visits) "
                              "VALUES (?, ?, ?, ?)")
        update = sess.prepare(f"UPDATE {ks}.patients SET visits = ?, note = ? WHERE id = ?")
        delete = sess.prepare(f"DELETE FROM {ks}.patients WHERE id = ?")
        wrng = random.Random(7)
        step = 0
        once = ROWS  # ids from ROWS up are written exactly once: losing that one change shows
        while writing.is_set() or step < 3 * ROWS:
            i = wrng.randrange(ROWS)
            choice = wrng.random()
            if choice < 0.3:
                sess.execute(insert, (i, f"Name{i}-{step}", f"p{i}.{step}@example.org", step))
            elif choice < 0.6:
                sess.execute(insert, (once, f"Once{once}", f"o{once}@example.org", step))
                once += 1
            elif choice < 0.9:
                sess.execute(update, (step, f"note {step}", i))
            else:
                sess.execute(delete, (i,))
            step += 1
            time.sleep(0.005)

    pipeline = launch(1)
    writer = threading.Thread(target=workload)
    writer.start()
    kills = 0
    try:
        for kill in range(KILLS):
            # Long enough for a run to start, resume and commit a few epochs (-s 1), short
            # enough to land in the middle of batches, sink writes included.
            time.sleep(rng.uniform(3.0, 7.0))
            os.killpg(pipeline.pid, signal.SIGKILL)  # a crash: no cleanup, no close()
            pipeline.wait()
            kills += 1
            pipeline = launch(2 if kill % 2 == 0 else 1)  # worker count changes across restarts
        writing.clear()
        writer.join()
        settings = load(config)
        masker = Runtime(settings).masker
        expected, found = None, None
        deadline = time.monotonic() + CONVERGE
        while time.monotonic() < deadline:
            rows = [{c: getattr(r, c) for c in COLUMNS}
                    for r in sess.execute(f"SELECT * FROM {ks}.patients")]
            expected = sorted(tuple(r[c] for c in COLUMNS)
                              for r in masker.mask_rows(bare, "patients", rows))
            found = sorted(_destination_rows(postgres_schema, bare))
            if found == expected:
                break
            time.sleep(2)
    finally:
        writing.clear()
        writer.join()
        os.killpg(pipeline.pid, signal.SIGKILL)
        pipeline.wait()
        log.close()

    assert kills == KILLS
    assert expected, "the workload left rows in Cassandra"
    # The restarts really resumed from committed snapshots (not from the start every time).
    resumed_at = _resume_epochs(recovery)
    assert len(resumed_at) == KILLS + 1 and max(resumed_at) > 1, resumed_at
    missing = set(expected) - set(found)
    extra = set(found) - set(expected)
    assert not missing and not extra, (
        f"{len(missing)} rows missing or stale, {len(extra)} extra or stale in PostgreSQL "
        f"after {kills} SIGKILLs; see {tmp_path / 'pipeline.log'}")


def _resume_epochs(recovery) -> list[int]:
    """Each execution's resume epoch, from Bytewax's recovery store (0.21.1's `exs` table)."""
    import sqlite3

    epochs: dict[int, int] = {}
    for part in sorted(recovery.glob("part-*.sqlite3")):
        with sqlite3.connect(part) as db:
            for execution, epoch in db.execute("SELECT ex_num, resume_epoch FROM exs"):
                epochs[execution] = epoch
    return [epochs[e] for e in sorted(epochs)]


def _destination_rows(schema: str, keyspace: str) -> list[tuple]:
    from devstack import postgres

    view = sql.Identifier(schema, f"{keyspace}__patients__current")
    try:
        with postgres.connect(role="admin") as conn:
            return conn.execute(sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), view)).fetchall()
    except Exception:  # noqa: BLE001 - the view appears with the sink's first batch
        return []
