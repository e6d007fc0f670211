"""The demo: patient-like data full of PII/PHI, captured from the commit log into PostgreSQL,
ClickHouse and TimescaleDB.

`python -m devstack.demo` (what `scripts/demo` runs) on a running stack: creates the keyspace
`clinic` (patients, and their vitals as time series), writes the pipeline's configuration and
masking policy under the stack home, starts `python -m bytewax.run dataflows.main`, writes a
load (inserts, partial updates, deletes), waits for every destination to catch up and prints
what arrived: counts on every side, lag, and masked samples. The pipeline is stopped at the end;
its log stays in the stack home.

The TimescaleDB destination writes the vitals into schema `timescale` of the stack's PostgreSQL,
which has no timescaledb extension (docs/adr/0001-local-stack.md): the sink runs with
when_missing "plain", makes plain tables and logs the hypertable statements it skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

from psycopg import sql

from devstack import cassandra, clickhouse, postgres, process, stack
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
    f"CREATE TABLE IF NOT EXISTS {KEYSPACE}.vitals (patient uuid, taken_at timestamp, "
    "heart_rate int, systolic int, diastolic int, note text, PRIMARY KEY (patient, taken_at)) "
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
    }}, "vitals": {"columns": {
        "patient": {"class": "none", "reason": "random surrogate key"},
        "taken_at": {"class": "none", "reason": "measurement time, not identifying on its own"},
        "heart_rate": {"class": "none", "reason": "not identifying on its own"},
        "systolic": {"class": "none", "reason": "not identifying on its own"},
        "diastolic": {"class": "none", "reason": "not identifying on its own"},
        "note": {"class": "other_phi", "strategy": "redact"},
    }}}},
}}
TIMESCALE_SCHEMA = "timescale"
# (destination, its table holding the current rows of a Cassandra table), as reported.
DESTINATION_TABLES = {"patients": ("PostgreSQL", "ClickHouse"),
                      "vitals": ("PostgreSQL", "ClickHouse", "TimescaleDB")}


def _configuration(folder) -> dict:
    info = cassandra.cluster_info(7)
    ca = str(ensure_certificates().ca_cert)
    postgres_destination = {
        "kind": "postgres", "host": postgres.HOST, "port": postgres.PORT, "database": "cdc",
        "username": "cdc_pipeline", "password": "openbao:cdc/postgres/pipeline#password",
        "ca_cert": ca, "partitions": 2, "options": {"schema": "cdc"},
    }
    return {
        "cassandra": {
            "contact_points": info.contact_points, "port": info.port, "username": "cdc_pipeline",
            "password": "openbao:cdc/cassandra/pipeline#password", "ca_cert": ca,
            "consistency": "LOCAL_QUORUM", "keyspaces": [KEYSPACE], "start_from": "latest",
            # Rows whose TTL runs out leave the destinations (the stack made the schedule).
            "ttl_expiry": {"poll_seconds": 2},
            "nodes": [{"name": f"c7-node{i + 1}", "cdc_raw": str(path)}
                      for i, path in enumerate(info.cdc_raw_dirs)],
        },
        "masking_policy": str(folder / "masking.json"),
        "dead_letter_dir": str(folder / "dead-letter"),
        "destinations": [postgres_destination, {
            **postgres_destination, "kind": "timescale", "name": "timescale",
            "options": {"schema": TIMESCALE_SCHEMA, "when_missing": "plain",
                        "time_columns": {f"{KEYSPACE}.vitals": "taken_at"},
                        "chunk_intervals": {f"{KEYSPACE}.vitals": "1 day"}},
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
    # Stopped from outside (timeout, a closed terminal): leave by SystemExit, so the pipeline
    # this starts is stopped too (a signal without a handler ended Python at once).
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, lambda number, _frame: sys.exit(128 + number))
    rng = random.Random(7)
    folder = service_dir("demo")
    for old in (folder / "dead-letter").glob("*.jsonl"):  # count this run's dead letters only
        old.unlink()
    # Batches an interrupted run left spooled belong to tables _reset drops: not this run's.
    shutil.rmtree(folder / "spool", ignore_errors=True)
    (folder / "masking.json").write_text(json.dumps(POLICY, indent=1))
    (folder / "pipeline.json").write_text(json.dumps(_configuration(folder), indent=1))

    (folder / "pipeline.log").unlink(missing_ok=True)
    with cassandra.session(7) as sess:
        _reset(sess)
        for statement in SCHEMA:
            sess.execute(statement)
        print(f"pipeline: starting (config {folder / 'pipeline.json'})")
        health_port = _free_port()
        env = {**os.environ, **stack.client_environment(),
               "CDC_PIPELINE_CONFIG": str(folder / "pipeline.json"),
               "CDC_HEALTH_PORT": str(health_port)}
        log = open(folder / "pipeline.log", "ab")  # noqa: SIM115 - closed below
        pipeline = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "bytewax.run", "dataflows.main"], cwd=REPO_ROOT, env=env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # The capture takes its starting point ("latest") as the flow is built: the load
            # waits until the pipeline says it is ready (its capture has polled), not a guess.
            _wait_ready(pipeline, health_port, folder / "pipeline.log")
            _load(sess, rng, args.patients)
            _report(sess, args.timeout, folder)
        finally:
            _stop(pipeline)
            log.close()
    return 0


# Loopback, never through an http_proxy the environment may name.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_ready(pipeline: subprocess.Popen, port: int, log: Path, timeout: float = 180.0
                ) -> None:
    """Until the pipeline's /readyz answers 200; stops the demo if it exits or never does."""
    def ready() -> bool:  # not serving yet, or 503: urllib raises, wait_until asks again
        with _DIRECT.open(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return answer.status == 200

    try:
        process.wait_until(ready, timeout=timeout, what="the pipeline's /readyz", log_path=log,
                           alive=lambda: pipeline.poll() is None)
    except process.StackError as error:
        raise SystemExit(str(error)) from None


def _stop(pipeline: subprocess.Popen) -> None:
    """SIGTERM: the flow closes its partitions (the spools drain, hardly anything is left by
    now); SIGKILL after 90 s, whatever holds it (what it had spooled stays for a next run)."""
    # A second signal (a second Ctrl-C too) must not leave it running.
    for stop in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(stop, signal.SIG_IGN)
    os.killpg(pipeline.pid, signal.SIGTERM)
    try:
        pipeline.wait(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(pipeline.pid, signal.SIGKILL)  # before printing: a hung-up terminal raises
        pipeline.wait(timeout=30)
        print("pipeline: still closing after 90 s; killed")


def _reset(sess) -> None:
    """Each run starts from nothing on every side, so the counts it prints compare like with
    like (the capture starts at the log's end: earlier rows would never arrive)."""
    sess.execute(f"DROP KEYSPACE IF EXISTS {KEYSPACE}", timeout=120)
    pipeline = sql.Identifier(postgres.ROLES["pipeline"])
    with postgres.connect(role="admin", autocommit=True) as conn:
        for schema in ("cdc", TIMESCALE_SCHEMA):
            for table in DESTINATION_TABLES:
                conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(
                    sql.Identifier(schema, f"{KEYSPACE}__{table}__current")))
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(
                    sql.Identifier(schema, f"{KEYSPACE}__{table}")))
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(
                sql.Identifier(schema, "_cdc_progress")))
        # The TimescaleDB destination's schema, granted like `cdc` (devstack/postgres.py).
        timescale = sql.Identifier(TIMESCALE_SCHEMA)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(
            timescale, sql.Identifier(postgres.ROLES["admin"])))
        conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(timescale))
        conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(
            timescale, pipeline))
    client = clickhouse.connect("admin")
    try:
        for table in DESTINATION_TABLES:
            for suffix in ("__current", "", "__static"):
                client.command(f"DROP TABLE IF EXISTS cdc.`{KEYSPACE}__{table}{suffix}`")
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
    vital = sess.prepare(f"INSERT INTO {KEYSPACE}.vitals (patient, taken_at, heart_rate, "  # noqa: S608 - constant keyspace
                         "systolic, diastolic, note) VALUES (?, ?, ?, ?, ?, ?)")
    forget = sess.prepare(f"DELETE FROM {KEYSPACE}.vitals WHERE patient = ?")  # noqa: S608 - constant keyspace
    began = time.monotonic()
    ids, vitals = [], 0
    for _ in range(count):
        row = _patient(rng)
        sess.execute(insert, row)
        ids.append(row[0])
        for hour in range(rng.randrange(1, 4)):
            sess.execute(vital, (row[0], datetime(2026, 11, 1, 8 + hour, tzinfo=UTC),
                                 rng.randrange(55, 110), rng.randrange(100, 160),
                                 rng.randrange(60, 100), f"seen by Dr {rng.choice(LAST)}"))
            vitals += 1
    for patient in rng.sample(ids, count // 5):
        sess.execute(update, (round(rng.uniform(45, 120), 1), "HbA1c 6.1%", patient))
    deleted = rng.sample(ids, count // 20)
    for patient in deleted:
        sess.execute(delete, (patient,))
        sess.execute(forget, (patient,))  # a partition delete: all their vitals
    print(f"load: {count} patients and {vitals} vitals inserted, {count // 5} partial updates, "
          f"{len(deleted)} patients deleted with their vitals, "
          f"in {time.monotonic() - began:.1f} s")


def _report(sess, timeout: float, folder) -> None:
    expected = {table: sess.execute(f"SELECT count(*) FROM {KEYSPACE}.{table}").one()[0]  # noqa: S608 - constant keyspace
                for table in DESTINATION_TABLES}
    deadline = time.monotonic() + timeout
    while True:
        arrived = {(table, where): _count(where, table)
                   for table, destinations in DESTINATION_TABLES.items()
                   for where in destinations}
        if all(n == expected[table] for (table, _), n in arrived.items()) or \
                time.monotonic() > deadline:
            break
        time.sleep(1)
    for table, destinations in DESTINATION_TABLES.items():
        counts = ", ".join(f"{where} {max(arrived[table, where], 0)}" for where in destinations)
        caught_up = all(arrived[table, where] == expected[table] for where in destinations)
        print(f"rows of {table}: Cassandra {expected[table]}, {counts}"
              + ("  (caught up)" if caught_up else "  (NOT caught up)"))
    with postgres.connect(role="admin", autocommit=True) as conn:
        for schema in ("cdc", TIMESCALE_SCHEMA):
            if conn.execute("SELECT to_regclass(%s)", (f"{schema}._cdc_progress",)
                            ).fetchone()[0] is None:
                print(f"progress ({schema}): none written")
                continue
            lag = conn.execute(sql.SQL(
                "SELECT sink_partition, node, segment_id, \"offset\", now() - updated_at "
                "FROM {} ORDER BY 1, 2").format(sql.Identifier(schema, "_cdc_progress")))
            for partition, node, segment, offset, age in lag.fetchall():
                print(f"progress ({schema}): sink partition {partition}, {node} at segment "
                      f"{segment} offset {offset}, last write {age.total_seconds():.1f} s ago")
        print("masked samples (PostgreSQL, patients):")
        for row in conn.execute(sql.SQL(
                "SELECT first_name, email, ssn, address, diagnosis, weight_kg FROM {} LIMIT 3"
        ).format(sql.Identifier("cdc", f"{KEYSPACE}__patients__current"))).fetchall():
            print("  " + " | ".join(_short(v) for v in row))
        print(f"masked samples (TimescaleDB, vitals; plain tables in schema {TIMESCALE_SCHEMA}):")
        for row in conn.execute(sql.SQL(
                "SELECT taken_at, heart_rate, systolic, diastolic, note FROM {} "
                "ORDER BY taken_at LIMIT 3").format(
                sql.Identifier(TIMESCALE_SCHEMA, f"{KEYSPACE}__vitals__current"))).fetchall():
            print("  " + " | ".join(_short(v) for v in row))
    dead = sum(1 for p in (folder / "dead-letter").glob("*.jsonl")
               for _ in p.open()) if (folder / "dead-letter").exists() else 0
    print(f"dead letters: {dead}")


def _count(destination: str, table: str) -> int:
    """Current rows of TABLE in DESTINATION; -1 until the sink has made its table."""
    try:
        if destination == "ClickHouse":
            client = clickhouse.connect("admin")
            try:
                return int(client.command(
                    f"SELECT count() FROM cdc.`{KEYSPACE}__{table}__current`"))  # noqa: S608 - constant
            finally:
                client.close()
        schema = TIMESCALE_SCHEMA if destination == "TimescaleDB" else "cdc"
        with postgres.connect(role="admin", autocommit=True) as conn:
            return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(schema, f"{KEYSPACE}__{table}__current"))).fetchone()[0]
    except Exception:  # noqa: BLE001 - the sink creates its tables on its first batch
        return -1


def _short(value) -> str:
    text = "NULL" if value is None else str(value)
    return text if len(text) <= 24 else text[:21] + "..."


if __name__ == "__main__":
    sys.exit(main())
