"""What the sink benchmarks share: the table they write, its batches, the timed cases, the report.

Rows: (tenant text, id bigint) key, a text, a bigint, a double, a timestamp, a uuid. Cases,
each the median of --repeat runs, each one write_batch as the flow calls it:
- new: N rows that do not exist yet;
- newer: the same N keys with a higher version (every row conflicts and is replaced);
- stale: the same N keys with a lower version (the version guard keeps the stored rows).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import statistics
import time
import uuid
from collections.abc import Callable

from connectors.cassandra.events import Position
from connectors.cassandra.schema import SchemaRows, TableSchema, build_schemas
from operators.row_ops import RowUpsert, Source

TABLE = "items"


def load_average() -> str:
    """The machine's 1/5/15-minute load, printed beside figures (the machines are shared)."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def parser(description: str) -> argparse.ArgumentParser:
    """The options every sink benchmark takes: --rows (per batch) and --repeat (runs)."""
    made = argparse.ArgumentParser(description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    made.add_argument("--rows", type=int, default=10_000)
    made.add_argument("--repeat", type=int, default=3)
    return made


def arguments(description: str) -> argparse.Namespace:
    made = parser(description)
    args = made.parse_args()
    check_counts(made, args)
    return args


def check_counts(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse --rows or --repeat below 1 before anything starts (a run of none has no median)."""
    for name in ("rows", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: must be at least 1, not {getattr(args, name)}")


def collector_as_in_the_pipeline() -> str:
    """Give this process the pipeline's garbage-collector thresholds (dataflows/collector.py,
    set by dataflows.main), so a sink is timed as the flow runs it, and say so. With CPython's
    (a young collection every 700 allocations) a 10k-row batch is traversed by tens of
    collections, more in the sink than in the raw paths; both paths share the process."""
    from dataflows.collector import tune_collector

    tune_collector()
    return f"collector thresholds {gc.get_threshold()} (the pipeline's, dataflows/collector.py)"


def start_stack(service) -> None:
    """OpenBao (the sink's password comes from it) and the sink's database, started if needed."""
    from devstack import stack

    stack.up(["openbao"], report=lambda _line: None)
    os.environ.update(stack.client_environment())
    service.install()
    service.start()


def items_schema() -> tuple[str, TableSchema]:
    """A fresh keyspace name and the benchmark table's schema in it."""
    ks = f"bench_{uuid.uuid4().hex[:8]}"
    cols = [("tenant", "partition_key", "text", 0), ("id", "clustering", "bigint", 0),
            ("name", "regular", "text", -1), ("qty", "regular", "bigint", -1),
            ("price", "regular", "double", -1), ("at", "regular", "timestamp", -1),
            ("ref", "regular", "uuid", -1)]
    table_row = {"keyspace_name": ks, "table_name": TABLE, "id": uuid.uuid4(), "cdc": True,
                 "flags": {"compound"}}
    rows = SchemaRows(
        all_tables=[table_row], tables=[table_row], views=[], types=[], dropped_columns=[],
        columns=[{"keyspace_name": ks, "table_name": TABLE, "column_name": n, "kind": k,
                  "type": t, "position": p, "clustering_order": "asc" if k == "clustering"
                  else "none"} for n, k, t, p in cols])
    return ks, next(iter(build_schemas(rows)[0].values()))


def upserts(ks: str, rows: int, version: int) -> list[RowUpsert]:
    at = datetime.datetime(2026, 1, 1)
    return [RowUpsert(ks, TABLE, {"tenant": f"t{i % 50}", "id": i},
                      {"name": f"item {i}", "qty": i, "price": i * 0.5, "at": at,
                       "ref": uuid.UUID(int=i)}, version, Source("n1", Position(1, i + 1)))
            for i in range(rows)]


def run_cases(part, ks: str, args: argparse.Namespace, truncate: Callable[[], None],
              extra: Callable[[int], tuple[str, float]] | None = None) -> dict[str, list[float]]:
    """Rows/s of each case per run (EXTRA(run) may time one more case: (name, rate))."""
    part.write_batch(upserts(ks, 1, 1))  # create the tables outside the timings
    results: dict[str, list[float]] = {"new": [], "newer": [], "stale": []}
    for run in range(args.repeat):
        truncate()
        for case, version in (("new", 10 + run * 10), ("newer", 15 + run * 10),
                              ("stale", 11 + run * 10)):
            ops = upserts(ks, args.rows, version)
            start = time.perf_counter()
            part.write_batch(ops)
            results[case].append(args.rows / (time.perf_counter() - start))
        if extra is not None:
            name, rate = extra(run)
            results.setdefault(name, []).append(rate)
    return results


def report(results: dict[str, list[float]], rows: int, units: dict[str, str] | None = None) -> None:
    for case, rates in results.items():
        unit = (units or {}).get(case, f"rows/s ({rows} rows/batch)")
        print(f"{case:6s} median {statistics.median(rates):,.0f} {unit} "
              f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})")


def postgres_sink_part(step: str, fillfactor: int | None = None):
    """(keyspace, a partition of the real PostgreSQL sink) on the stack, for the items table,
    its tables made with FILLFACTOR (PostgresSinkSettings.fillfactor)."""
    from connectors.postgres import PostgresSink, PostgresSinkSettings
    from devstack import postgres
    from devstack.certs import ensure_certificates

    start_stack(postgres.PostgresService())
    ks, schema = items_schema()
    settings = PostgresSinkSettings(
        host=postgres.HOST, port=postgres.PORT, dbname=postgres.DATABASE, user="cdc_pipeline",
        password_ref="openbao:cdc/postgres/pipeline#password",  # noqa: S106 - a reference
        sslrootcert=str(ensure_certificates().ca_cert), schema="cdc", fillfactor=fillfactor)
    sink = PostgresSink(settings, lambda k, t: schema if (k, t) == (ks, TABLE) else None)
    return ks, sink.build_part(step, "0", None)


def clickhouse_sink_part(step: str):
    """(keyspace, a partition of the real ClickHouse sink) on the stack, for the items table.
    STEP may hold "{ks}" (ClickHouse progress rows are per step and partition)."""
    from connectors.clickhouse import ClickHouseSink, ClickHouseSinkSettings
    from devstack import clickhouse
    from devstack.certs import ensure_certificates

    start_stack(clickhouse.ClickHouseService())
    ks, schema = items_schema()
    settings = ClickHouseSinkSettings(
        host=clickhouse.HOST, port=clickhouse.HTTPS_PORT, database=clickhouse.DATABASE,
        user="cdc_pipeline",
        password_ref="openbao:cdc/clickhouse/pipeline#password",  # noqa: S106 - a reference
        ca_cert=str(ensure_certificates().ca_cert))
    sink = ClickHouseSink(settings, lambda k, t: schema if (k, t) == (ks, TABLE) else None)
    return ks, sink.build_part(step.format(ks=ks), "0", None)


def add_fillfactor(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--fillfactor", type=int, default=None, help=help_text)


def check_fillfactor(parser: argparse.ArgumentParser, value: int | None) -> None:
    """Refuse --fillfactor as the sink's own check would (PostgresSinkSettings)."""
    from connectors.postgres import PostgresSinkSettings

    try:
        PostgresSinkSettings.check_fillfactor(value)
    except ValueError as error:
        parser.error(f"--fillfactor: {error}")


def make_raw_table(conn, ks: str, fillfactor: int | None):
    """cdc.<ks>__items__raw, an empty table of the sink's definition (LIKE ... INCLUDING ALL,
    the primary key included) and its FILLFACTOR (LIKE copies no storage parameters), for a
    raw path next to the sink's; returned qualified and quoted."""
    from psycopg import sql

    table = sql.SQL("cdc.{}").format(sql.Identifier(f"{ks}__{TABLE}"))
    raw = sql.SQL("cdc.{}").format(sql.Identifier(f"{ks}__{TABLE}__raw"))
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(raw, table))
    if fillfactor is not None:
        conn.execute(sql.SQL("ALTER TABLE {} SET (fillfactor = {})").format(
            raw, sql.Literal(fillfactor)))
    return raw


def drop_postgres_bench(part, ks: str, step: str) -> None:
    """Drop what a PostgreSQL benchmark made for KS (the raw table, the view, the table) and
    its progress rows of STEP, then close PART (its sink partition)."""
    from psycopg import sql

    with part._pool.connection() as conn:  # noqa: SLF001 - the benchmark's own partition
        for suffix, kind in (("__raw", "TABLE"), ("__current", "VIEW"), ("", "TABLE")):
            conn.execute(sql.SQL(f"DROP {kind} IF EXISTS cdc.{{}}").format(  # noqa: S608
                sql.Identifier(f"{ks}__{TABLE}{suffix}")))
        conn.execute("DELETE FROM cdc._cdc_progress WHERE step_id = %s", (step,))
        conn.commit()
    part.close()


def raw_copy_note(rows_note: str, fillfactor: int | None) -> str:
    return ("postgres: raw = binary COPY into an empty table with the same primary key and"
            f" fillfactor ({fillfactor or 'PostgreSQL default, 100'}); {rows_note}")
