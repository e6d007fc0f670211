"""End to end: Cassandra's own sustained write rate, and how the pipeline keeps up with it.

    python benchmarks/pipeline_throughput.py [--version 7|8] [--duration 20] [--changes 100000]
        [--rss-changes 200000] [--workers 1,2] [--writers 2] [--skip-phases 4]

Against the running devstack (Cassandra, PostgreSQL, OpenBao; nothing is started or stopped),
with a fresh keyspace and a fresh PostgreSQL schema, both dropped at the end. Rows and writers:
benchmarks/cdc_load.py (patient-like inserts, one change per row, masked by the pipeline with
the demo's strategies: OpenBao tokenization, HMAC). The pipeline is the real one,
`python -m bytewax.run dataflows.main` with a generated configuration (PostgreSQL only),
started as a subprocess and stopped at the end of each phase (also on Ctrl-C).

1. Cassandra: WRITERS processes insert flat out (execute_async, CONCURRENCY in flight each)
   for DURATION seconds into a CDC table; writes/s = acknowledged writes / time.
2. Pipeline throughput: CHANGES rows are written first (the backlog), then the pipeline starts
   at the commit-log position taken before them; changes/s = CHANGES / (time from the
   pipeline's start until PostgreSQL holds every row), once per worker count in --workers.
   "steady" leaves the start-up out (first row visible -> last). Ratio = pipeline / Cassandra.
3. Latency: the pipeline runs live; rows are written at --latency-rate (default 80% of phase
   1) for DURATION seconds; a reader polls PostgreSQL every --poll seconds for the rows that
   appeared. Change-to-visible = first poll that saw a row - the time its write was sent, so it
   includes the write itself and up to one poll interval. Also printed, per row, where that
   time went: write sent -> read back (its version is the read-back's start, docs/adr/0003:
   the commit-log sync, the capture and the queue before the row-image step), then read back ->
   applied (_cdc_updated_at, the applying transaction's start: masking, the spool, the sink).
   Target: p99 <= commitlog_sync_period + 1 s.
4. Memory: RSS-CHANGES rows written at --rss-rate (default 90% of the slower of phase 2 and
   80% of phase 1) while the pipeline runs live; the RSS of the pipeline's process tree
   (/proc VmRSS) is sampled every --rss-interval seconds. Growth = last sample / first sample
   after warm-up (10% of the rows visible) - 1. Target: within 10% over 1M changes.

The machine's load (os.getloadavg) is printed with the figures: on a shared machine they are
only comparable between runs at similar load. cdc_raw is not pruned (the segments written stay
until whoever consumes cdc_raw deletes them); the space the run added is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from array import array
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cassandra.metadata import protect_name  # noqa: E402
from psycopg import sql  # noqa: E402

from benchmarks import cdc_load, cpu_meter  # noqa: E402
from benchmarks.cdc_mirror import Mirror  # noqa: E402
from benchmarks.sink_bench import load_average as load  # noqa: E402
from connectors.cassandra.source import (  # noqa: E402
    DEFAULT_MAX_RECORDS,
    MAX_MAX_RECORDS,
    MIN_MAX_RECORDS,
)
from connectors.cassandra.tail import Cursor, LocalSegmentStore, end_cursor  # noqa: E402
from connectors.postgres import table_names  # noqa: E402
from connectors.secrets import SecretResolver  # noqa: E402
from devstack.bytewax_cluster import cluster_commands  # noqa: E402
from devstack.paths import stack_home  # noqa: E402
from tests.dataflows.pipeline_files import masking_policy, postgres_destination  # noqa: E402

TABLES = {1: "p1_load", 2: "p2_backlog", 3: "p3_live", 4: "p4_rss"}
STALL = 60.0  # seconds without a new row in PostgreSQL: the pipeline is stuck, stop waiting


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", type=int, choices=(7, 8), default=7,
                        help="the cluster: commit-log version 7 or 8")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds of writing in phases 1 and 3")
    parser.add_argument("--changes", type=int, default=100_000, help="phase 2's backlog")
    parser.add_argument("--rss-changes", type=int, default=200_000,
                        help="phase 4's rows (1000000 for the issue's target)")
    parser.add_argument("--workers", default="1,2",
                        help="phase 2's runs, comma-separated: N for N worker threads in one "
                             "process (-w N), Np for N processes of one worker each (-i/-a); "
                             "the first is used in phases 3 and 4")
    parser.add_argument("--writers", type=int, default=2, help="writer processes")
    parser.add_argument("--concurrency", type=int, default=128,
                        help="requests in flight per writer")
    parser.add_argument("--latency-rate", type=float, default=None,
                        help="phase 3's writes/s (default: 80%% of phase 1's rate)")
    parser.add_argument("--rss-rate", type=float, default=None, help="phase 4's writes/s")
    parser.add_argument("--rss-interval", type=float, default=5.0)
    parser.add_argument("--poll", type=float, default=0.1,
                        help="phase 3's PostgreSQL poll interval, seconds")
    parser.add_argument("--max-records", type=int, default=DEFAULT_MAX_RECORDS,
                        help="the pipeline's batching.max_records "
                             f"({MIN_MAX_RECORDS}..{MAX_MAX_RECORDS})")
    parser.add_argument("--skip-phases", default="",
                        help="comma-separated phase numbers to skip (1-4)")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the pipeline logs under .stack/bench/pipeline-throughput/")
    args = parser.parse_args()
    args.worker_counts = [w.strip() for w in args.workers.split(",") if w.strip()]
    for spec in args.worker_counts:
        if not re.fullmatch(r"[1-9][0-9]*p?", spec):
            parser.error(f"--workers: {spec!r} is neither N nor Np")
    if not args.worker_counts:
        parser.error("--workers: give at least one N or Np")
    phases = [p.strip() for p in args.skip_phases.split(",") if p.strip()]
    if any(p not in ("1", "2", "3", "4") for p in phases):
        parser.error(f"--skip-phases: {args.skip_phases!r} is not a list of phases 1-4")
    args.skip = {int(p) for p in phases}
    # Before anything is written: a bad value would otherwise fail (or hang) phases later.
    for name in ("changes", "rss_changes", "writers", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: must be at least 1")
    for name in ("duration", "rss_interval", "poll", "latency_rate", "rss_rate"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            parser.error(f"--{name.replace('_', '-')}: must be more than 0")
    if not MIN_MAX_RECORDS <= args.max_records <= MAX_MAX_RECORDS:  # what the config takes
        parser.error(f"--max-records: must be between {MIN_MAX_RECORDS} and {MAX_MAX_RECORDS}")
    # A phase whose rate would come from a skipped phase: refused now, not after the others.
    if 3 not in args.skip and 1 in args.skip and args.latency_rate is None:
        parser.error("phase 3: give --latency-rate or run phase 1 (its rate is 80% of 1's)")
    if 4 not in args.skip and {1, 2} <= args.skip and args.rss_rate is None:
        parser.error("phase 4: give --rss-rate or run phase 1 or 2 (its rate comes from them)")
    return args




# --- the stack ----------------------------------------------------------------------------------

class Bench:
    """The run's keyspace, PostgreSQL schema, sessions and pipeline processes; close() drops
    and stops all of it."""

    def __init__(self, args: argparse.Namespace) -> None:
        from devstack import cassandra, postgres, stack
        from devstack.certs import ensure_certificates

        os.environ.update(stack.client_environment())
        self.args = args
        self.secrets = SecretResolver()
        self.info = cassandra.cluster_info(args.version)
        self.ca_cert = str(ensure_certificates().ca_cert)
        self.name = f"bench_pipe_{uuid.uuid4().hex[:8]}"
        self.folder = stack_home() / "bench" / "pipeline-throughput"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pipelines: list[Running] = []
        self.mirrors: list[Mirror] = []
        self._pg_password = self.secrets.resolve("openbao:cdc/postgres/admin#password")
        self.pipeline_role = self.secrets.resolve("openbao:cdc/postgres/pipeline#username")
        self.cluster, self.session = cassandra.connect(
            args.version, "admin",
            password=self.secrets.resolve("openbao:cdc/cassandra/admin#password"))
        self._postgres = postgres
        self.cdc_raw_before = self.cdc_raw_bytes()
        rf = len(self.info.contact_points)
        self.session.execute(f"CREATE KEYSPACE {protect_name(self.name)} WITH replication = "
                             f"{{'class': 'NetworkTopologyStrategy', 'datacenter1': {rf}}}",
                             timeout=120)
        self.session.execute(f"GRANT SELECT ON KEYSPACE {protect_name(self.name)} TO cdc_pipeline")
        for table in TABLES.values():
            self.session.execute(cdc_load.table_ddl(self.name, table), timeout=120)
        self.reset_schema()

    def pg(self, **kwargs):
        return self._postgres.connect(role="admin", password=self._pg_password, autocommit=True,
                                      **kwargs)

    def reset_schema(self) -> None:
        """A fresh, empty destination schema owned by the pipeline's role."""
        with self.pg() as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(self.name)))
            conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
                sql.Identifier(self.name), sql.Identifier(self.pipeline_role)))

    def rows_table(self, table: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.name),
                                       sql.Identifier(table_names(self.name, table)[0]))

    def stores(self) -> list[LocalSegmentStore]:
        return [LocalSegmentStore(path) for path in self.info.cdc_raw_dirs]

    def cdc_raw_bytes(self) -> int:
        return sum(store.usage_bytes() for store in self.stores())

    def cursors(self) -> list[Cursor | None]:
        """Where each node's commit log ends now."""
        return [end_cursor(store) for store in self.stores()]

    def mirror(self, label: str, starts: list[Cursor | None]) -> list[Path]:
        """Private, unpruned views of each node's cdc_raw from START on (benchmarks/
        cdc_mirror.py), kept in sync until close(); returns their directories."""
        dirs = []
        for i, (path, start) in enumerate(zip(self.info.cdc_raw_dirs, starts, strict=True)):
            mirror = Mirror(path, self.folder / f"cdc_raw-{label}-node{i + 1}",
                            start.segment_id if start is not None else 0)
            mirror.sync()
            mirror.start()
            self.mirrors.append(mirror)
            dirs.append(mirror.target)
        return dirs

    def write_config(self, table: str, starts: list[Cursor | None], cdc_raw: list[Path],
                     label: str) -> Path:
        """The pipeline's configuration for TABLE only, reading CDC_RAW (a directory per node),
        each node from START (the position before its rows); PostgreSQL only."""
        nodes = []
        for i, (path, start) in enumerate(zip(cdc_raw, starts, strict=True)):
            node = {"name": f"c{self.args.version}-node{i + 1}", "cdc_raw": str(path)}
            if start is not None:
                node["start_at"] = {"segment_id": start.segment_id, "offset": start.offset}
            nodes.append(node)
        (self.folder / "masking.json").write_text(json.dumps(
            masking_policy(self.name, {table: cdc_load.masking_columns()}), indent=1))
        config = self.folder / f"pipeline-{label}.json"
        config.write_text(json.dumps({
            "cassandra": {
                "contact_points": self.info.contact_points, "port": self.info.port,
                "username": "cdc_pipeline",
                "password": "openbao:cdc/cassandra/pipeline#password",
                "ca_cert": self.ca_cert, "consistency": "ONE", "keyspaces": [self.name],
                "tables": [f"{self.name}.{table}"], "nodes": nodes,
                "start_from": "earliest",
            },
            "batching": {"max_records": self.args.max_records},
            "masking_policy": str(self.folder / "masking.json"),
            "dead_letter_dir": str(self.folder / "dead-letter"),
            "destinations": [postgres_destination(self.name, self.ca_cert)],
        }, indent=1))
        return config

    def start_pipeline(self, table: str, starts: list[Cursor | None], cdc_raw: list[Path],
                       workers: str, label: str) -> Running:
        """`python -m bytewax.run dataflows.main -w N` on write_config()'s file, or for "Np" N
        such processes of one worker each (-i/-a over loopback)."""
        config = self.write_config(table, starts, cdc_raw, label)
        log = (self.folder / f"pipeline-{label}.log").open("wb")
        env = {**os.environ, "CDC_PIPELINE_CONFIG": str(config)}
        command = [sys.executable, "-m", "bytewax.run", "dataflows.main"]
        runs = (cluster_commands(command, int(workers[:-1])) if workers.endswith("p")
                else [[*command, "-w", workers]])
        process = Running([subprocess.Popen(  # noqa: S603
            run, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True) for run in runs])
        log.close()
        self.pipelines.append(process)
        return process

    def stop_pipeline(self, process: Running) -> None:
        process.stop()
        if process in self.pipelines:
            self.pipelines.remove(process)

    def count(self, conn, table: str) -> int:
        """Rows the sink applied to TABLE (0 before it created it)."""
        try:
            return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                self.rows_table(table))).fetchone()[0]
        except Exception:  # noqa: BLE001 - the sink creates the table on its first batch
            return 0

    def close(self) -> None:
        """Stop the pipelines and mirrors, drop the keyspace and the schema (each attempted even
        when another fails)."""
        try:
            for process in list(self.pipelines):
                self.stop_pipeline(process)
            for mirror in self.mirrors:
                mirror.remove()
        finally:
            try:
                self.session.execute(f"DROP KEYSPACE IF EXISTS {protect_name(self.name)}",
                                     timeout=120)
            finally:
                self.cluster.shutdown()
                with self.pg() as conn:
                    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                        sql.Identifier(self.name)))
                if not self.args.keep_logs:
                    for path in self.folder.glob("pipeline-*"):
                        path.unlink()


# --- the pipeline process -----------------------------------------------------------------------

class Running:
    """The pipeline's processes (one, or a cluster's), each in its own process group."""

    def __init__(self, processes: list[subprocess.Popen]) -> None:
        self.processes = processes

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def exited(self) -> int | None:
        """None while every process runs; else the exit code of one that ended (a cluster
        whose member died is not running)."""
        codes = [p.poll() for p in self.processes]
        ended = [code for code in codes if code is not None]
        return ended[0] if ended else None

    def stop(self) -> None:
        """SIGTERM to every process group, then SIGKILL to those still there after 30 s;
        returns once every process has ended."""
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for process in self.processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def rss_mib(process: Running) -> float:
    """Resident memory of the pipeline's processes and their descendants."""
    return cpu_meter.rss_mib(process.pids)


def check_alive(bench: Bench, process: Running, label: str) -> None:
    code = process.exited()
    if code is not None:
        raise SystemExit(f"the pipeline ({label}) exited with {code}; see "
                         f"{bench.folder / f'pipeline-{label}.log'} (run with --keep-logs)")


def wait_for_rows(bench: Bench, process: Running, table: str, expected: int,
                  label: str, *, interval: float = 0.5,
                  on_sample=None) -> tuple[float | None, int, float | None, float]:
    """Poll until TABLE holds EXPECTED rows: (monotonic time of the first row, rows then,
    monotonic time of the last, its count); None when it stalled for STALL seconds."""
    first_at, first_count = None, 0
    last, last_change = -1, time.monotonic()
    with bench.pg() as conn:
        while True:
            check_alive(bench, process, label)
            now = time.monotonic()
            count = bench.count(conn, table)
            if on_sample is not None:
                on_sample(now, count)
            if count and first_at is None:
                first_at, first_count = now, count
            if count != last:
                last, last_change = count, now
            if count >= expected:
                return first_at, first_count, now, count
            if now - last_change > STALL:
                return first_at, first_count, None, count
            time.sleep(interval)


# --- phases -------------------------------------------------------------------------------------

@dataclass
class Figures:
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (what, figure, note)

    def add(self, what: str, figure: str, note: str = "") -> None:
        self.rows.append((what, figure, note))
        print(f"  {what}: {figure}" + (f"  ({note})" if note else ""), flush=True)


def _errors(results: list[cdc_load.WriteResult]) -> str:
    merged: dict[str, int] = {}
    for r in results:
        for name, n in r.errors.items():
            merged[name] = merged.get(name, 0) + n
    return ", ".join(f"{n} {name}" for name, n in sorted(merged.items())) or "no errors"


def _cpu(figures: Figures, what: str, usage: cpu_meter.Usage, items: int) -> None:
    """Cores per group over the meter's interval (benchmarks/cpu_meter.py), and what each
    group's CPU time comes to per item (write or change) done in that interval."""
    note = "CPU-ms per item: " + ", ".join(
        f"{group} {ms:.2f}" for group, ms in usage.per_item(items).items())
    figures.add(what, cpu_meter.describe(usage), note)


def phase1(bench: Bench, figures: Figures) -> float:
    args = bench.args
    print(f"phase 1: {args.writers} writers x {args.concurrency} in flight, "
          f"{args.duration:.0f} s flat out (load {load()})", flush=True)
    meter = cpu_meter.Meter()
    meter.start()
    results = cdc_load.write_parallel(
        version=args.version, keyspace=bench.name, table=TABLES[1], writers=args.writers,
        duration=args.duration, concurrency=args.concurrency)
    used = meter.stop()
    written = sum(r.written for r in results)
    rate = written / max(r.elapsed for r in results)
    figures.add("Cassandra sustained writes/s", f"{rate:,.0f}",
                f"{written:,} inserts in {args.duration:.0f} s, {_errors(results)}, "
                f"load {load()}")
    _cpu(figures, "phase 1 CPU (the writers are in other)", used, written)
    return rate


def phase2(bench: Bench, figures: Figures, cassandra_rate: float | None) -> dict[str, float]:
    """Changes/s per worker count (only the runs that caught up)."""
    args = bench.args
    table = TABLES[2]
    starts = bench.cursors()
    cdc_raw = bench.mirror("p2", starts)
    print(f"phase 2: writing a backlog of {args.changes:,} rows (load {load()})", flush=True)
    results = cdc_load.write_parallel(
        version=args.version, keyspace=bench.name, table=table, writers=args.writers,
        count=args.changes, concurrency=args.concurrency)
    expected = sum(r.written for r in results)
    backlog_rate = expected / max(r.elapsed for r in results)
    figures.add("backlog write rate (writes/s)", f"{backlog_rate:,.0f}",
                f"{expected:,} rows, {_errors(results)}")
    time.sleep(2)  # let the last commit-log sync mark the rows durable in _cdc.idx
    rates: dict[str, float] = {}
    for workers in args.worker_counts:
        bench.reset_schema()
        label = f"p2-{workers}"
        print(f"phase 2: pipeline {run_name(workers)} on the backlog (load {load()})", flush=True)
        began = time.monotonic()
        process = bench.start_pipeline(table, starts, cdc_raw, workers, label)
        meter = cpu_meter.Meter(lambda process=process: {"pipeline": process.pids})
        meter.start()
        peak = [0.0]

        def sample(_now, _count, process=process, peak=peak) -> None:
            peak[0] = max(peak[0], rss_mib(process))

        try:
            first_at, first_count, done_at, count = wait_for_rows(
                bench, process, table, expected, label, on_sample=sample)
            used = meter.stop()
        finally:
            bench.stop_pipeline(process)
        if done_at is None:
            figures.add(f"pipeline {run_name(workers)} changes/s", "n/a",
                        f"stalled at {count:,}/{expected:,} rows")
            continue
        total = expected / (done_at - began)
        steady = (expected - first_count) / max(done_at - first_at, 1e-9)
        ratio = f", ratio {total / cassandra_rate:.2f}" if cassandra_rate else ""
        figures.add(f"pipeline {run_name(workers)} changes/s", f"{total:,.0f}",
                    f"{expected:,} in {done_at - began:.1f} s from start{ratio}; steady "
                    f"{steady:,.0f}/s after first row at {first_at - began:.1f} s; "
                    f"pipeline CPU {used.cores['pipeline'] * used.seconds:.0f} s; "
                    f"peak RSS {peak[0]:.0f} MiB; load {load()}")
        if cassandra_rate:
            figures.add(f"ratio pipeline/Cassandra {run_name(workers)}",
                        f"{total / cassandra_rate:.2f}", "target >= 1.0")
        _cpu(figures, f"phase 2 CPU {run_name(workers)}", used, expected)
        rates[workers] = total
    return rates


def run_name(workers: str) -> str:
    """How a --workers entry is run: "-w 2" (threads of one process) or "2 processes"."""
    return f"{workers[:-1]} processes" if workers.endswith("p") else f"-w {workers}"


class Poller(threading.Thread):
    """Records, per seq in [FIRST, FIRST + TOTAL), the wall-clock time of the first poll of
    PostgreSQL that saw it."""

    def __init__(self, bench: Bench, table: str, first: int, total: int, interval: float):
        super().__init__(daemon=True)
        self.bench, self.table, self.first, self.total = bench, table, first, total
        self.interval = interval
        self.seen = array("d", bytes(8 * total))
        self.low = 0  # every seq below FIRST + low has been seen
        self.polls = 0
        self.stop = threading.Event()

    def run(self) -> None:
        query = sql.SQL("SELECT seq FROM {} WHERE seq >= %s AND seq < %s").format(
            self.bench.rows_table(self.table))
        with self.bench.pg() as conn:
            while not self.stop.is_set() and self.low < self.total:
                at = time.time()
                for (seq,) in conn.execute(query, (self.first + self.low,
                                                   self.first + self.total)).fetchall():
                    if not self.seen[seq - self.first]:
                        self.seen[seq - self.first] = at
                while self.low < self.total and self.seen[self.low]:
                    self.low += 1
                self.polls += 1
                self.stop.wait(max(0.0, self.interval - (time.time() - at)))


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _warm_up(bench: Bench, process: Running, table: str, label: str) -> float:
    """One row (seq -1) through the pipeline: it has started and created its tables. Returns
    the seconds it took."""
    began = time.monotonic()
    bench.session.execute(
        f"INSERT INTO {protect_name(bench.name)}.{protect_name(table)} "  # noqa: S608 - quoted
        "(seq, first_name, last_name, email, mrn, visits, weight_kg, admitted_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", cdc_load.row(-1))
    _first, _n, done_at, _count = wait_for_rows(bench, process, table, 1, label, interval=0.2)
    if done_at is None:
        raise SystemExit(f"the pipeline ({label}) delivered nothing in {STALL:.0f} s")
    return done_at - began


def phase3(bench: Bench, figures: Figures, rate: float) -> None:
    from devstack.cassandra_config import CassandraSettings

    args = bench.args
    table, label = TABLES[3], "p3"
    total = max(1, int(rate * args.duration))
    sync_ms = commitlog_sync_period_ms(bench)
    print(f"phase 3: pipeline live; {total:,} rows at {rate:,.0f}/s for {args.duration:.0f} s "
          f"(load {load()})", flush=True)
    starts = bench.cursors()
    process = bench.start_pipeline(table, starts, bench.mirror(label, starts),
                                   args.worker_counts[0], label)
    try:
        startup = _warm_up(bench, process, table, label)
        poller = Poller(bench, table, 0, total, args.poll)
        poller.start()
        meter = cpu_meter.Meter(lambda: {"pipeline": process.pids})
        meter.start()
        results = cdc_load.write_parallel(
            version=args.version, keyspace=bench.name, table=table, writers=args.writers,
            count=total, rate=rate, concurrency=args.concurrency, record_times=True)
        used = meter.stop()  # while the rows are written: writers and pipeline together
        written = sum(r.written for r in results)
        achieved = written / max(r.elapsed for r in results)
        stalled_since, low = time.monotonic(), poller.low
        while poller.is_alive() and time.monotonic() - stalled_since < STALL:
            check_alive(bench, process, label)
            if poller.low != low:
                stalled_since, low = time.monotonic(), poller.low
            time.sleep(0.5)
        poller.stop.set()
        poller.join()
        with bench.pg() as conn:
            stages = conn.execute(sql.SQL(
                "SELECT seq, _cdc_version / 1e6, extract(epoch FROM _cdc_updated_at) FROM {}"
                " WHERE seq >= 0").format(bench.rows_table(table))).fetchall()
    finally:
        bench.stop_pipeline(process)
    sent = cdc_load.sent_times(results, 0, total)
    latencies = sorted(poller.seen[i] - sent[i] for i in range(total)
                       if sent[i] and poller.seen[i])
    missing = sum(1 for i in range(total) if sent[i] and not poller.seen[i])
    figures.add("live write rate (writes/s)", f"{achieved:,.0f}",
                f"target {rate:,.0f}; {written:,} rows, {_errors(results)}; pipeline start-up "
                f"{startup:.1f} s (first row visible)")
    _cpu(figures, "phase 3 CPU while writing (the writers are in other)", used, written)
    target = sync_ms / 1000 + 1
    if latencies:
        p50, p95, p99 = (_percentile(latencies, q) for q in (0.5, 0.95, 0.99))
        figures.add("change-to-visible p50/p95/p99 (s)", f"{p50:.2f} / {p95:.2f} / {p99:.2f}",
                    f"max {latencies[-1]:.2f}, mean {statistics.fmean(latencies):.2f}; "
                    f"{len(latencies):,} rows, {missing:,} not seen; polled every "
                    f"{args.poll} s ({poller.polls} polls); target p99 <= {target:.1f} s "
                    f"(commitlog_sync_period {sync_ms} ms + 1 s): "
                    f"{'met' if p99 <= target else 'NOT met'}")
    else:
        figures.add("change-to-visible p50/p95/p99 (s)", "n/a", f"no row seen of {total:,}")
    # The same rows on both sides: those whose send time is known.
    timed = [(seq, float(read), float(applied)) for seq, read, applied in stages
             if 0 <= seq < total and sent[seq]]
    to_read = sorted(read - sent[seq] for seq, read, _ in timed)
    to_apply = sorted(applied - read for _, read, applied in timed)
    for name, values, what in (
            ("sent -> read back p50/p95/p99 (s)", to_read,
             "commit-log sync, capture, queue before the row-image step"),
            ("read back -> applied p50/p95/p99 (s)", to_apply,
             "masking, spool, sink (up to the applying transaction's start)")):
        if values:
            figures.add(name, " / ".join(f"{_percentile(values, q):.2f}"
                                         for q in (0.5, 0.95, 0.99)), what)
    default = CassandraSettings().commitlog_sync_period_ms
    if sync_ms != default:
        print(f"  note: commitlog_sync_period {sync_ms} ms (devstack default {default} ms)")


def commitlog_sync_period_ms(bench: Bench) -> int:
    """From the first node's cassandra.yaml (devstack writes it at each start)."""
    from devstack.cassandra_config import CassandraSettings, cluster_spec, current_nodes

    node = current_nodes(cluster_spec(bench.args.version))[0]
    path = node.home / "cassandra.yaml"
    found = re.search(r'"?commitlog_sync_period"?\s*:\s*"?(\d+)(ms|s)\b',
                      path.read_text() if path.is_file() else "")
    if found is None:
        return CassandraSettings().commitlog_sync_period_ms
    return int(found.group(1)) * (1 if found.group(2) == "ms" else 1000)


def phase4(bench: Bench, figures: Figures, rate: float) -> None:
    args = bench.args
    table, label = TABLES[4], "p4"
    total = args.rss_changes
    print(f"phase 4: pipeline live; {total:,} rows at {rate:,.0f}/s, RSS every "
          f"{args.rss_interval:.0f} s (about {total / rate:.0f} s; load {load()})", flush=True)
    starts = bench.cursors()
    process = bench.start_pipeline(table, starts, bench.mirror(label, starts),
                                   args.worker_counts[0], label)
    samples: list[tuple[float, int, float]] = []  # (seconds, rows visible, RSS MiB)
    try:
        _warm_up(bench, process, table, label)
        began = time.monotonic()
        holder: list = []
        writer = threading.Thread(target=lambda: holder.append(cdc_load.write_parallel(
            version=args.version, keyspace=bench.name, table=table, writers=args.writers,
            count=total, rate=rate, concurrency=args.concurrency)), daemon=True)
        writer.start()
        next_at = [began]

        def sample(now: float, count: int) -> None:
            if now >= next_at[0]:
                samples.append((now - began, count, rss_mib(process)))
                t, n, mib = samples[-1]
                print(f"    {t:6.0f} s  {n:>9,} rows  RSS {mib:7.1f} MiB  load {load()}",
                      flush=True)
                next_at[0] = now + args.rss_interval

        _first, _n, done_at, count = wait_for_rows(
            bench, process, table, total + 1, label, interval=1.0, on_sample=sample)
        writer.join()
        sample(time.monotonic() + args.rss_interval, count)
    finally:
        bench.stop_pipeline(process)
    written = sum(r.written for r in holder[0]) if holder else 0
    warm = next((s for s in samples if s[1] >= 0.1 * total), None)
    last = samples[-1]
    if warm is None or warm is last:
        figures.add("RSS growth", "n/a", "too few samples after warm-up")
        return
    growth = (last[2] - warm[2]) / warm[2] * 100
    peak = max(s[2] for s in samples)
    figures.add("RSS growth over the run", f"{growth:+.1f}%",
                f"{warm[2]:.0f} MiB at {warm[0]:.0f} s ({warm[1]:,} rows) -> {last[2]:.0f} MiB "
                f"at {last[0]:.0f} s ({last[1]:,} rows); peak {peak:.0f} MiB; {written:,} "
                f"rows written; target within 10%: {'met' if abs(growth) <= 10 else 'NOT met'}"
                + ("" if done_at else "; the pipeline stalled before the end"))
    # Not the target's figure, beside it: the bounded caches (de-duplication, tokens) are
    # still filling at 10% of a run; the second half shows whether anything else grows.
    half = next((s for s in samples if s[1] >= 0.5 * total), None)
    if half is not None and half is not last:
        figures.add("RSS growth over the second half", f"{(last[2] - half[2]) / half[2]:+.1%}",
                    f"{half[2]:.0f} MiB at {half[1]:,} rows -> {last[2]:.0f} MiB at "
                    f"{last[1]:,} rows (for reference; the target is the line above)")


# --- main ---------------------------------------------------------------------------------------

def main() -> None:
    args = arguments()
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])

    def interrupted(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    print(f"command: {command}")
    print(f"machine: {cpu_meter.machine_cores()} cores, load {load()} at start", flush=True)
    figures = Figures()
    bench = Bench(args)
    print(f"keyspace and PostgreSQL schema: {bench.name} (dropped at the end)", flush=True)
    try:
        cassandra_rate, pipeline_rates = None, {}
        if 1 not in args.skip:
            cassandra_rate = phase1(bench, figures)
        if 2 not in args.skip:
            pipeline_rates = phase2(bench, figures, cassandra_rate)
        if 3 not in args.skip:
            rate = args.latency_rate if args.latency_rate is not None else \
                (0.8 * cassandra_rate if cassandra_rate else None)
            if rate is None:
                print("phase 3 skipped: give --latency-rate or run phase 1")
            else:
                phase3(bench, figures, rate)
        if 4 not in args.skip:
            rate = args.rss_rate
            if rate is None:
                known = [r for r in (pipeline_rates.get(args.worker_counts[0]),
                                     0.8 * cassandra_rate if cassandra_rate else None) if r]
                rate = 0.9 * min(known) if known else None
            if rate is None:
                print("phase 4 skipped: give --rss-rate or run phases 1 or 2")
            else:
                phase4(bench, figures, rate)
    except KeyboardInterrupt:
        print("interrupted: cleaning up", flush=True)
    finally:
        added = bench.cdc_raw_bytes() - bench.cdc_raw_before
        bench.close()
    report(command, figures, added)


def report(command: str, figures: Figures, cdc_raw_added: int) -> None:
    width = max([len(w) for w, _, _ in figures.rows] + [10])
    fig_width = max([len(f) for _, f, _ in figures.rows] + [6])
    print()
    print(f"command: {command}")
    print(f"machine: {cpu_meter.machine_cores()} cores, load {load()} at the end; cdc_raw "
          f"changed by {cdc_raw_added / 2**20:+,.0f} MiB (this run prunes nothing; other runs "
          "may)")
    print(f"{'figure'.ljust(width)}  {'value'.rjust(fig_width)}  notes")
    for what, figure, note in figures.rows:
        print(f"{what.ljust(width)}  {figure.rjust(fig_width)}  {note}")


if __name__ == "__main__":
    main()
