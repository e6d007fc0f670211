"""What the SIGKILL tests share: the pipeline as a killable process with a recovery store, a
random workload of patient rows, and the oracle (destination == Cassandra, through masking).

Row images heal a row at its next change, so a lost change only shows when it was the row's
last: part of the workload writes rows exactly once, spread over the whole run. Updates carry a
few KB so that 1 MiB commit-log segments roll over (and get deleted) during a run.
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
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from psycopg import sql

from dataflows.config import load
from devstack.bytewax_cluster import cluster_commands
from devstack.paths import REPO_ROOT
from tests.dataflows.pipeline_files import masking_policy, oracle_masker

ROWS = 150
NOTE = "n" * 4000
COLUMNS = ["id", "first_name", "email", "visits", "note"]
COLUMN_RULES = {
    "id": {"class": "none", "reason": "surrogate key, no personal data"},
    "first_name": {"class": "first_name", "strategy": "tokenize"},
    "email": {"class": "email", "strategy": "hmac"},
}
TABLE_DDL = ("CREATE TABLE {ks}.patients (id int PRIMARY KEY, first_name text, email text, "
             "visits int, note text) WITH cdc = true")
# Time-series rows for a TimescaleDB destination too (its time column, `at`, is in the key).
VISITS_DDL = ("CREATE TABLE {ks}.visits (patient int, at timestamp, diagnosis text, "
              "PRIMARY KEY (patient, at)) WITH cdc = true")
VISIT_COLUMNS = ["patient", "at", "diagnosis"]
VISIT_RULES = {
    "patient": {"class": "none", "reason": "surrogate key, no personal data"},
    "at": {"class": "none", "reason": "visit time, no personal data"},
    "diagnosis": {"class": "diagnosis", "strategy": "hmac"},
}
TABLES = {"patients": COLUMNS, "visits": VISIT_COLUMNS}  # the oracle's columns per table
VISITS_FROM = datetime(2026, 11, 1, tzinfo=UTC)


class Pipeline:
    """`python -m bytewax.run dataflows.main` with a recovery store, killed and restarted at will.

    The configuration is written once (CONFIG: the pipeline's JSON document without the masking
    policy and recovery keys, which this class adds)."""

    def __init__(self, directory: Path, keyspace: str, config: dict, env: dict[str, str]) -> None:
        self.directory = directory
        self.recovery = directory / "recovery"
        self.recovery.mkdir()
        subprocess.run([sys.executable, "-m", "bytewax.recovery", str(self.recovery), "2"],
                       check=True)
        (directory / "masking.json").write_text(
            json.dumps(masking_policy(keyspace, {"patients": COLUMN_RULES,
                                                 "visits": VISIT_RULES})))
        self.config = directory / "pipeline.json"
        self.config.write_text(json.dumps({
            **config, "masking_policy": str(directory / "masking.json"),
            "dead_letter_dir": str(directory / "dead-letter"),
            "recovery_directory": str(self.recovery)}))
        self.log_path = directory / "pipeline.log"
        self._log = self.log_path.open("ab")
        self._env = {**os.environ, **env, "CDC_PIPELINE_CONFIG": str(self.config)}
        self._processes: list[subprocess.Popen] = []

    def start(self, workers: int = 1, *, processes: int = 1) -> None:
        """WORKERS threads in one process, or PROCESSES processes of one worker each (a
        cluster over loopback, as on separate machines)."""
        command = [sys.executable, "-m", "bytewax.run", "dataflows.main",
                   "-r", str(self.recovery), "-s", "1", "-b", "0"]
        if processes == 1:
            runs = [[*command, "-w", str(workers)]]
        else:
            runs = cluster_commands(command, processes)
        self._processes = [subprocess.Popen(  # noqa: S603
            run, cwd=REPO_ROOT, env=self._env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True) for run in runs]

    def kill(self) -> None:
        """SIGKILL every process group: a crash, no cleanup, no close()."""
        for process in self._processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        for process in self._processes:
            process.wait()

    def close(self) -> None:
        self.kill()
        self._log.close()

    def masker(self):
        return oracle_masker(load(self.config))

    def resume_epochs(self) -> list[int]:
        """Each execution's resume epoch, from Bytewax's recovery store (0.21.1's `exs`)."""
        import sqlite3

        epochs: dict[int, int] = {}
        for part in sorted(self.recovery.glob("part-*.sqlite3")):
            with sqlite3.connect(part) as db:
                for execution, epoch in db.execute("SELECT ex_num, resume_epoch FROM exs"):
                    epochs[execution] = epoch
        return [epochs[e] for e in sorted(epochs)]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


class Workload:
    """Inserts, updates (with a few KB), deletes and write-once rows, until stopped and at least
    3 x ROWS statements were written. With VISITS, a fifth of the statements write the visits
    table (VISITS_DDL): upserts, row deletes and partition deletes."""

    def __init__(self, sess, keyspace: str, *, seed: int = 7, consistency=None,
                 visits: bool = False) -> None:
        self._sess = sess
        self._ks = keyspace
        self._seed = seed
        self._visits = visits
        self._consistency = consistency
        self._writing = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.errors: list[Exception] = []
        self.statements = 0

    def start(self) -> None:
        self._writing.set()
        self._thread.start()

    def stop(self) -> None:
        self._writing.clear()
        if self._thread.is_alive():  # not started (a failed setup): nothing to wait for
            self._thread.join()

    def _prepare(self, text: str):
        statement = self._sess.prepare(text)
        if self._consistency is not None:
            statement.consistency_level = self._consistency
        return statement

    def _run(self) -> None:
        ks = self._ks
        insert = self._prepare(f"INSERT INTO {ks}.patients (id, first_name, email, visits) "
                               "VALUES (?, ?, ?, ?)")
        update = self._prepare(f"UPDATE {ks}.patients SET visits = ?, note = ? WHERE id = ?")
        delete = self._prepare(f"DELETE FROM {ks}.patients WHERE id = ?")
        visits = self._visit_statements() if self._visits else None
        rng = random.Random(self._seed)
        step = 0
        once = ROWS  # ids from ROWS up are written exactly once: losing that one change shows
        while self._writing.is_set() or step < 3 * ROWS:
            i = rng.randrange(ROWS)
            choice = rng.random()
            try:
                if visits is not None and rng.random() < 0.2:
                    self._write_visit(visits, rng, step)
                elif choice < 0.3:
                    self._sess.execute(insert, (i, f"Name{i}-{step}", f"p{i}.{step}@example.org",
                                                step))
                elif choice < 0.6:
                    self._sess.execute(insert, (once, f"Once{once}", f"o{once}@example.org", step))
                    once += 1
                elif choice < 0.9:
                    self._sess.execute(update, (step, f"note {step} {NOTE}", i))
                else:
                    self._sess.execute(delete, (i,))
            except Exception as error:  # noqa: BLE001 - a write the cluster refused: not applied
                # or applied, the oracle reads Cassandra's truth either way; count it.
                self.errors.append(error)
            step += 1
            self.statements = step
            time.sleep(0.005)

    def _visit_statements(self) -> tuple:
        ks = self._ks
        return (self._prepare(f"INSERT INTO {ks}.visits (patient, at, diagnosis) "
                              "VALUES (?, ?, ?)"),
                self._prepare(f"DELETE FROM {ks}.visits WHERE patient = ? AND at = ?"),
                self._prepare(f"DELETE FROM {ks}.visits WHERE patient = ?"))

    def _write_visit(self, statements: tuple, rng: random.Random, step: int) -> None:
        upsert, delete_row, delete_partition = statements
        patient, at = rng.randrange(20), VISITS_FROM + timedelta(hours=rng.randrange(30))
        choice = rng.random()
        if choice < 0.8:
            self._sess.execute(upsert, (patient, at, f"D{step}"))
        elif choice < 0.95:
            self._sess.execute(delete_row, (patient, at))
        else:
            self._sess.execute(delete_partition, (patient,))


def every_destination(postgres_schema: str, timescale_schema: str, bare: str
                      ) -> dict[str, tuple[str, Callable[[], list[tuple]]]]:
    """The readers `converge` takes for the fan-out of the kill tests (PostgreSQL and
    ClickHouse get both tables, TimescaleDB the visits): name -> (Cassandra table, rows)."""
    return {
        "postgres patients": ("patients", lambda: destination_rows(postgres_schema, bare)),
        "clickhouse patients": ("patients", lambda: clickhouse_rows(bare)),
        "postgres visits": ("visits", lambda: destination_rows(postgres_schema, bare, "visits")),
        "clickhouse visits": ("visits", lambda: clickhouse_rows(bare, "visits")),
        "timescale visits": ("visits",
                             lambda: destination_rows(timescale_schema, bare, "visits")),
    }


def converge(sess, keyspace: str, bare: str, masker,
             readers: Mapping[str, tuple[str, Callable[[], list[tuple]]]], *, timeout: float,
             consistency=None) -> tuple[dict[str, list[tuple]], dict[str, list[tuple]]]:
    """Poll until every destination table (READERS: name -> (Cassandra table, its rows))
    equals Cassandra's table (masked) or TIMEOUT passes: ({table: expected rows},
    {name: rows found})."""
    expected: dict[str, list[tuple]] = {}
    found: dict[str, list[tuple]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        expected = {table: cassandra_rows(sess, keyspace, bare, table, masker,
                                          consistency=consistency)
                    for table in {table for table, _ in readers.values()}}
        found = {name: sorted(map(_utc, read())) for name, (_, read) in readers.items()}
        if all(found[name] == expected[table] for name, (table, _) in readers.items()):
            break
        time.sleep(2)
    return expected, found


def cassandra_rows(sess, keyspace: str, bare: str, table: str, masker, *,
                   consistency=None) -> list[tuple]:
    """TABLE's rows in Cassandra through MASKER, as the oracle compares them (TABLES' columns,
    timestamps in UTC), sorted."""
    from cassandra.query import SimpleStatement

    columns = TABLES[table]
    query = SimpleStatement(f"SELECT * FROM {keyspace}.{table}",  # noqa: S608
                            consistency_level=consistency)
    rows = [{c: getattr(r, c) for c in columns} for r in sess.execute(query)]
    return sorted(_utc(tuple(r[c] for c in columns)) for r in masker.mask_rows(bare, table, rows))


def _utc(row: tuple) -> tuple:
    """ROW with naive datetimes (the Cassandra driver's, UTC) made aware, as PostgreSQL's are."""
    return tuple(v.replace(tzinfo=UTC) if isinstance(v, datetime) and v.tzinfo is None else v
                 for v in row)


def clickhouse_query(keyspace: str, what: str, table: str = "patients") -> list[tuple]:
    """WHAT from the ClickHouse sink's current-state view of TABLE."""
    from clickhouse_connect.driver.binding import quote_identifier

    from devstack import clickhouse

    client = clickhouse.connect("admin")
    try:
        return [tuple(row) for row in client.query(
            f"SELECT {what} FROM cdc.{quote_identifier(f'{keyspace}__{table}__current')}"
        ).result_rows]
    except Exception:  # noqa: BLE001 - the table appears with the sink's first batch
        return []
    finally:
        client.close()


def clickhouse_rows(keyspace: str, table: str = "patients") -> list[tuple]:
    """TABLE's current rows in ClickHouse, timestamps (Int64 milliseconds there, see
    docs/type-mapping.md) as datetimes."""
    from clickhouse_connect.driver.binding import quote_identifier

    columns = TABLES[table]
    rows = clickhouse_query(keyspace, ", ".join(map(quote_identifier, columns)), table)
    if "at" not in columns:
        return rows
    at = columns.index("at")
    return [(*row[:at], datetime.fromtimestamp(row[at] / 1000, UTC), *row[at + 1:])
            for row in rows]


def drop_clickhouse_tables(keyspace: str) -> None:
    """The sinks' tables live in the shared database `cdc`: drop every one of KEYSPACE's."""
    from clickhouse_connect.driver.binding import quote_identifier

    from devstack import clickhouse

    client = clickhouse.connect("admin")
    try:
        for (name,) in client.query("SELECT name FROM system.tables WHERE database = 'cdc'"
                                    ).result_rows:
            if name.startswith(keyspace + "__"):
                client.command(f"DROP TABLE IF EXISTS cdc.{quote_identifier(name)}")
    finally:
        client.close()


def destination_rows(schema: str, keyspace: str, table: str = "patients") -> list[tuple]:
    """TABLE's current rows in a PostgreSQL (or TimescaleDB) destination's SCHEMA."""
    from devstack import postgres

    view = sql.Identifier(schema, f"{keyspace}__{table}__current")
    try:
        with postgres.connect(role="admin") as conn:
            return conn.execute(sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(map(sql.Identifier, TABLES[table])), view)).fetchall()
    except Exception:  # noqa: BLE001 - the view appears with the sink's first batch
        return []


def difference(expected: list[tuple], found: list[tuple], where: str) -> str | None:
    """None if FOUND holds exactly EXPECTED's rows, each as many times (a row held twice is
    a duplicate: sets could not see it); else what differs."""
    missing = Counter(expected) - Counter(found)
    extra = Counter(found) - Counter(expected)
    if not missing and not extra:
        return None
    return (f"{sum(missing.values())} rows missing or stale, {sum(extra.values())} extra, "
            f"stale or duplicated; see {where}")
