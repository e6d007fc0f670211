"""Patient-like writes into a CDC table of the devstack Cassandra, for the pipeline benchmark.

Each writer is a separate process (one Python driver saturates a core long before Cassandra
does) with its own TLS session, password from OpenBao. A writer keeps CONCURRENCY requests in
flight through execute_async, either as fast as the node answers (for a duration) or paced at a
rate (for a count), and writes rows seq = first, first + stride, ... so that several writers
share one sequence without overlapping. Optionally it records when it sent each row (wall
clock, for change-to-visible latency).

Rows: seq bigint PRIMARY KEY, names, email, MRN (PII/PHI, masked by the pipeline), visits int,
weight double, admitted_at timestamp. Inserts only: one change per row, so a count of rows in
the destination is a count of changes applied.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime

from cassandra.metadata import protect_name

FIRST = ["Ana", "Ben", "Chloé", "Dmitri", "Eun-ji", "Farah", "Gustavo", "Hana", "Ivo", "Júlia"]
LAST = ["Lima", "Okafor", "Novak", "Tanaka", "Schmidt", "Haddad", "Moreau", "Silva"]
ADMITTED = datetime(2026, 1, 1, tzinfo=UTC)


def table_ddl(keyspace: str, table: str) -> str:
    return (f"CREATE TABLE {protect_name(keyspace)}.{protect_name(table)} (seq bigint PRIMARY "
            "KEY, first_name text, last_name text, email text, mrn text, visits int, "
            "weight_kg double, admitted_at timestamp) WITH cdc = true")


def masking_columns() -> dict[str, dict]:
    """The masking policy's rules for the table (the demo's strategies for the same classes)."""
    return {
        "seq": {"class": "none", "reason": "benchmark sequence number"},
        "first_name": {"class": "first_name", "strategy": "tokenize"},
        "last_name": {"class": "last_name", "strategy": "tokenize"},
        "email": {"class": "email", "strategy": "hmac"},
        "mrn": {"class": "medical_record_number", "strategy": "tokenize"},
        "visits": {"class": "none", "reason": "a count"},
        "weight_kg": {"class": "none", "reason": "not identifying on its own"},
        "admitted_at": {"class": "none", "reason": "benchmark timestamp"},
    }


def row(seq: int) -> tuple:
    first, last = FIRST[seq % len(FIRST)], LAST[(seq // 7) % len(LAST)]
    return (seq, first, last, f"{first.lower()}.{last.lower()}{seq}@example.org",
            f"MRN-{seq % 1_000_000:06d}", seq % 97, 45.0 + (seq % 750) / 10, ADMITTED)


@dataclass(frozen=True)
class WriteJob:
    version: int
    keyspace: str
    table: str
    first: int
    stride: int
    count: int | None = None  # rows to write; None: until DURATION
    duration: float | None = None  # seconds
    rate: float | None = None  # rows/s of this writer; None: as fast as the node answers
    concurrency: int = 128
    start_at: float = 0.0  # time.time() at which to begin (writers start together)
    record_times: bool = False


@dataclass
class WriteResult:
    written: int  # acknowledged
    failed: int
    elapsed: float  # seconds from the first send to the last answer
    first: int
    stride: int
    sent_at: array | None  # time.time() of each send, by index (seq = first + i * stride)
    errors: dict[str, int]


def write(job: WriteJob) -> WriteResult:
    """Run one writer in this process (see the module docstring)."""
    from connectors.secrets import SecretResolver
    from devstack import cassandra

    password = SecretResolver().resolve("openbao:cdc/cassandra/admin#password")
    cluster, session = cassandra.connect(job.version, "admin", password=password,
                                         metadata=False)
    try:
        insert = session.prepare(
            f"INSERT INTO {protect_name(job.keyspace)}.{protect_name(job.table)} "  # noqa: S608 - quoted
            "(seq, first_name, last_name, email, mrn, visits, weight_kg, admitted_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        return _write(session, insert, job)
    finally:
        cluster.shutdown()


def _write(session, insert, job: WriteJob) -> WriteResult:
    slots = threading.BoundedSemaphore(job.concurrency)
    lock = threading.Lock()
    done = {"ok": 0, "failed": 0}
    errors: dict[str, int] = {}

    def ok(_rows) -> None:
        with lock:
            done["ok"] += 1
        slots.release()

    def failed(error: BaseException) -> None:
        with lock:
            done["failed"] += 1
            errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
        slots.release()

    sent_at = array("d") if job.record_times else None
    delay = job.start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    began = time.monotonic()
    deadline = began + job.duration if job.duration is not None else None
    i = 0
    while job.count is None or i < job.count:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        if job.rate is not None:
            due = job.rate * (now - began)
            if i >= due:
                time.sleep(min(0.002, (i + 1 - due) / job.rate))
                continue
        slots.acquire()
        if sent_at is not None:
            sent_at.append(time.time())
        future = session.execute_async(insert, row(job.first + i * job.stride))
        future.add_callbacks(ok, failed)
        i += 1
    for _ in range(job.concurrency):  # every answer in
        slots.acquire()
    return WriteResult(done["ok"], done["failed"], time.monotonic() - began, job.first,
                       job.stride, sent_at, errors)


def write_parallel(*, version: int, keyspace: str, table: str, writers: int, first: int = 0,
                   count: int | None = None, duration: float | None = None,
                   rate: float | None = None, concurrency: int = 128,
                   record_times: bool = False) -> list[WriteResult]:
    """WRITERS processes writing one sequence from FIRST: COUNT rows in all (or for DURATION
    seconds), at RATE rows/s in all (None: flat out). They begin together once all have
    connected (about 3 s from now)."""
    start_at = time.time() + 3.0 + 0.5 * writers
    jobs = []
    for w in range(writers):
        share = None if count is None else count // writers + (1 if w < count % writers else 0)
        jobs.append(WriteJob(version, keyspace, table, first + w, writers, share, duration,
                             None if rate is None else rate / writers, concurrency, start_at,
                             record_times))
    context = multiprocessing.get_context("spawn")  # no driver state crosses a fork
    with context.Pool(writers) as pool:
        return pool.map(write, jobs)


def sent_times(results: list[WriteResult], first: int, total: int) -> array:
    """time.time() of each row's send by seq - FIRST (0.0: not sent)."""
    times = array("d", bytes(8 * total))
    for result in results:
        if result.sent_at is None:
            continue
        for i, t in enumerate(result.sent_at):
            index = result.first + i * result.stride - first
            if 0 <= index < total:
                times[index] = t
    return times
