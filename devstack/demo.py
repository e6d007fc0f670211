"""The demo: patient-like data full of PII/PHI, captured from the commit log into PostgreSQL and
ClickHouse.

`python -m devstack.demo` (what `scripts/demo` runs) on a running stack: creates the keyspace
`clinic`, writes the pipeline's configuration and masking policy under the stack home, starts
`python -m bytewax.run dataflows.main`, writes a load (inserts, partial updates, deletes),
waits for PostgreSQL to catch up and prints what arrived: counts on both sides, lag, and masked
samples. The pipeline is stopped at the end; its log stays in the stack home.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import date

from psycopg import sql

from devstack import cassandra, clickhouse, postgres, stack
from devstack.certs import ensure_certificates
from devstack.paths import REPO_ROOT, service_dir

KEYSPACE = "clinic"
FIRST = ["Ana", "Ben", "Chloé", "Dmitri", "Eun-ji", "Farah", "Gustavo", "Hana", "Ivo", "Júlia"]
LAST = ["Lima", "Okafor", "Novak", "Tanaka", "Schmidt", "Haddad", "Moreau", "Silva"]
DIAGNOSES = ["E11.9 type 2 diabetes", "I10 hypertension", "J45 asthma", "F32 depression"]
DRUGS = ["metformin 500 mg", "lisinopril 10 mg", "salbutamol inhaler", "sertraline 50 mg"]

SCHEMA = [
    f"CREATE KEYSPACE IF NOT EXISTS {KEYSPACE} WITH replication = "
    "{'class': 'NetworkTopologyStrategy', 'datacenter1': 1}",
    f"CREATE TABLE IF NOT EXISTS {KEYSPACE}.patients (id uuid PRIMARY KEY, first_name text, "
    "last_name text, email text, phone text, ssn text, address text, date_of_birth date, "
    "mrn text, diagnosis text, prescription text, lab_result text, weight_kg double) "
    "WITH cdc = true",
    f"GRANT SELECT ON KEYSPACE {KEYSPACE} TO cdc_pipeline",
]

POLICY = {"masking": {
    "version": 1,
    "hmac": {"key": "openbao:cdc/masking#hmac_key"},
    "tokenize": {"mount": "transit", "key": "cdc-tokenization"},
    "tables": {KEYSPACE: {"patients": {"columns": {
        "id": {"class": "none", "reason": "random surrogate key"},
        "first_name": {"class": "first_name", "strategy": "tokenize"},
        "last_name": {"class": "last_name", "strategy": "tokenize"},
        "email": {"class": "email", "strategy": "hmac"},
        "phone": {"class": "phone", "strategy": "hmac"},
        "ssn": {"class": "ssn", "strategy": "tokenize"},
        "address": {"class": "address", "strategy": "redact"},
        "date_of_birth": {"class": "date_of_birth", "strategy": "redact"},
        "mrn": {"class": "medical_record_number", "strategy": "tokenize"},
        "diagnosis": {"class": "diagnosis", "strategy": "hmac"},
        "prescription": {"class": "prescription", "strategy": "redact"},
        "lab_result": {"class": "lab_result", "strategy": "redact"},
        "weight_kg": {"class": "none", "reason": "not identifying on its own"},
    }}}},
}}


def _configuration(folder) -> dict:
    info = cassandra.cluster_info(7)
    ca = str(ensure_certificates().ca_cert)
    return {
        "cassandra": {
            "contact_points": info.contact_points, "port": info.port, "username": "cdc_pipeline",
            "password": "openbao:cdc/cassandra/pipeline#password", "ca_cert": ca,
            "consistency": "ONE", "keyspaces": [KEYSPACE], "start_from": "latest",
            "nodes": [{"name": f"c7-node{i + 1}", "cdc_raw": str(path)}
                      for i, path in enumerate(info.cdc_raw_dirs)],
        },
        "batching": {"max_records": 500},
        "masking_policy": str(folder / "masking.json"),
        "dead_letter_dir": str(folder / "dead-letter"),
        "destinations": [{
            "kind": "postgres", "host": postgres.HOST, "port": postgres.PORT, "database": "cdc",
            "username": "cdc_pipeline", "password": "openbao:cdc/postgres/pipeline#password",
            "ca_cert": ca, "partitions": 2, "options": {"schema": "cdc"},
        }, {
            "kind": "clickhouse", "host": clickhouse.HOST, "port": clickhouse.HTTPS_PORT,
            "database": "cdc", "username": "cdc_pipeline",
            "password": "openbao:cdc/clickhouse/pipeline#password", "ca_cert": ca,
            "partitions": 2,
        }],
    }


def _patient(rng: random.Random) -> tuple:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return (uuid.uuid4(), first, last, f"{first.lower()}.{last.lower()}@example.org",
            f"+1-555-{rng.randrange(10**7):07d}", f"{rng.randrange(10**9):09d}",
            f"{rng.randrange(1, 999)} Main St",
            date(rng.randrange(1940, 2010), 1 + rng.randrange(12), 1 + rng.randrange(28)),
            f"MRN-{rng.randrange(10**6):06d}", rng.choice(DIAGNOSES), rng.choice(DRUGS),
            f"HbA1c {rng.uniform(4.5, 9.5):.1f}%", round(rng.uniform(45, 120), 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.demo", description=__doc__)
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    rng = random.Random(7)
    folder = service_dir("demo")
    for old in (folder / "dead-letter").glob("*.jsonl"):  # count this run's dead letters only
        old.unlink()
    (folder / "masking.json").write_text(json.dumps(POLICY, indent=1))
    (folder / "pipeline.json").write_text(json.dumps(_configuration(folder), indent=1))

    (folder / "pipeline.log").unlink(missing_ok=True)
    with cassandra.session(7) as sess:
        _reset(sess)
        for statement in SCHEMA:
            sess.execute(statement)
        print(f"pipeline: starting (config {folder / 'pipeline.json'})")
        env = {**os.environ, **stack.client_environment(),
               "CDC_PIPELINE_CONFIG": str(folder / "pipeline.json")}
        log = open(folder / "pipeline.log", "ab")  # noqa: SIM115 - closed below
        pipeline = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "bytewax.run", "dataflows.main"], cwd=REPO_ROOT, env=env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            time.sleep(5)  # the capture takes its starting point ("latest") as it starts
            if pipeline.poll() is not None:
                raise SystemExit(f"the pipeline exited at once; see {folder / 'pipeline.log'}")
            _load(sess, rng, args.patients)
            _report(sess, args.timeout, folder)
        finally:
            os.killpg(pipeline.pid, signal.SIGTERM)
            pipeline.wait(timeout=30)
            log.close()
    return 0


def _reset(sess) -> None:
    """Each run starts from nothing on every side, so the counts it prints compare like with
    like (the capture starts at the log's end: earlier rows would never arrive)."""
    sess.execute(f"DROP KEYSPACE IF EXISTS {KEYSPACE}", timeout=120)
    with postgres.connect(role="admin", autocommit=True) as conn:
        for suffix in ("__patients__current", "__patients"):
            kind = "VIEW" if suffix.endswith("current") else "TABLE"
            conn.execute(sql.SQL(f"DROP {kind} IF EXISTS {{}}").format(  # noqa: S608 - constant
                sql.Identifier("cdc", f"{KEYSPACE}{suffix}")))
        conn.execute("DROP TABLE IF EXISTS cdc._cdc_progress")
    client = clickhouse.connect("admin")
    try:
        for suffix in ("__patients__current", "__patients", "__patients__static"):
            client.command(f"DROP TABLE IF EXISTS cdc.`{KEYSPACE}{suffix}`")
        client.command("DROP TABLE IF EXISTS cdc._cdc_progress")
    finally:
        client.close()


def _load(sess, rng: random.Random, count: int) -> None:
    insert = sess.prepare(
        f"INSERT INTO {KEYSPACE}.patients (id, first_name, last_name, email, phone, ssn, address, "  # noqa: S608 - constant keyspace
        "date_of_birth, mrn, diagnosis, prescription, lab_result, weight_kg) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    update = sess.prepare(f"UPDATE {KEYSPACE}.patients SET weight_kg = ?, lab_result = ? "  # noqa: S608 - constant keyspace
                          "WHERE id = ?")
    delete = sess.prepare(f"DELETE FROM {KEYSPACE}.patients WHERE id = ?")  # noqa: S608 - constant keyspace
    began = time.monotonic()
    ids = []
    for _ in range(count):
        row = _patient(rng)
        sess.execute(insert, row)
        ids.append(row[0])
    for patient in rng.sample(ids, count // 5):
        sess.execute(update, (round(rng.uniform(45, 120), 1), "HbA1c 6.1%", patient))
    for patient in rng.sample(ids, count // 20):
        sess.execute(delete, (patient,))
    print(f"load: {count} inserts, {count // 5} partial updates, {count // 20} deletes "
          f"in {time.monotonic() - began:.1f} s")


def _report(sess, timeout: float, folder) -> None:
    expected = sess.execute(f"SELECT count(*) FROM {KEYSPACE}.patients").one()[0]  # noqa: S608 - constant keyspace
    view = sql.Identifier("cdc", f"{KEYSPACE}__patients__current")
    deadline, arrived = time.monotonic() + timeout, -1
    with postgres.connect(role="admin", autocommit=True) as conn:
        while time.monotonic() < deadline:
            try:
                count = sql.SQL("SELECT count(*) FROM {}").format(view)
                arrived = conn.execute(count).fetchone()[0]
            except Exception:  # noqa: BLE001 - the sink creates the table on its first batch
                arrived = -1
            if arrived == expected:
                break
            time.sleep(1)
        print(f"rows: Cassandra {expected}, PostgreSQL {max(arrived, 0)}"
              + ("  (caught up)" if arrived == expected else "  (NOT caught up)"))
        lag = conn.execute("SELECT sink_partition, node, segment_id, \"offset\", "
                           "now() - updated_at FROM cdc._cdc_progress ORDER BY 1, 2").fetchall()
        for partition, node, segment, offset, age in lag:
            print(f"progress: sink partition {partition}, {node} at segment {segment} offset "
                  f"{offset}, last write {age.total_seconds():.1f} s ago")
        print("masked samples (PostgreSQL):")
        for row in conn.execute(sql.SQL(
                "SELECT first_name, email, ssn, address, diagnosis, weight_kg FROM {} LIMIT 3"
        ).format(view)).fetchall():
            print("  " + " | ".join(_short(v) for v in row))
    client = clickhouse.connect("admin")
    try:
        in_clickhouse = client.command(
            f"SELECT count() FROM cdc.`{KEYSPACE}__patients__current`")  # noqa: S608 - constant
    except Exception:  # noqa: BLE001 - reported, not raised: the demo shows what arrived
        in_clickhouse = "n/a"
    finally:
        client.close()
    print(f"rows: ClickHouse {in_clickhouse}")
    dead = sum(1 for p in (folder / "dead-letter").glob("*.jsonl")
               for _ in p.open()) if (folder / "dead-letter").exists() else 0
    print(f"dead letters: {dead}")


def _short(value) -> str:
    text = "NULL" if value is None else str(value)
    return text if len(text) <= 24 else text[:21] + "..."


if __name__ == "__main__":
    sys.exit(main())
