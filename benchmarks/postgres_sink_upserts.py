"""Upsert rate of the PostgreSQL sink: one write_batch of N RowUpserts, as the flow calls it.

    python benchmarks/postgres_sink_upserts.py [--rows 10000] [--repeat 3]

Against the devstack PostgreSQL (started if needed), through a real sink partition (password
from OpenBao, verified TLS 1.3, pool of one). A fresh keyspace name per run; its tables are
dropped at the end. Three cases, each the median of --repeat runs, each one transaction:
- new: N rows that do not exist yet;
- newer: the same N keys with a higher version (every row conflicts and is updated);
- stale: the same N keys with a lower version (every row conflicts, the guard skips it).
Rows: (tenant text, id bigint) key, a text, a bigint, a double, a timestamp, a uuid.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
import uuid

from psycopg import sql

from connectors.cassandra.events import Position
from connectors.cassandra.schema import SchemaRows, build_schemas
from connectors.postgres import PostgresSink, PostgresSinkSettings
from operators.row_ops import RowUpsert, Source


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from devstack import postgres, stack
    from devstack.certs import ensure_certificates
    from devstack.postgres import PostgresService

    stack.up(["openbao"], report=lambda _line: None)
    os.environ.update(stack.client_environment())
    service = PostgresService()
    service.install()
    service.start()

    ks = f"bench_{uuid.uuid4().hex[:8]}"
    cols = [("tenant", "partition_key", "text", 0), ("id", "clustering", "bigint", 0),
            ("name", "regular", "text", -1), ("qty", "regular", "bigint", -1),
            ("price", "regular", "double", -1), ("at", "regular", "timestamp", -1),
            ("ref", "regular", "uuid", -1)]
    table_row = {"keyspace_name": ks, "table_name": "items", "id": uuid.uuid4(), "cdc": True,
                 "flags": {"compound"}}
    rows = SchemaRows(
        all_tables=[table_row], tables=[table_row], views=[], types=[], dropped_columns=[],
        columns=[{"keyspace_name": ks, "table_name": "items", "column_name": n, "kind": k,
                  "type": t, "position": p, "clustering_order": "asc" if k == "clustering"
                  else "none"} for n, k, t, p in cols])
    schema = next(iter(build_schemas(rows)[0].values()))
    settings = PostgresSinkSettings(
        host=postgres.HOST, port=postgres.PORT, dbname=postgres.DATABASE, user="cdc_pipeline",
        password_ref="openbao:cdc/postgres/pipeline#password",  # noqa: S106 - a reference
        sslrootcert=str(ensure_certificates().ca_cert), schema="cdc")
    sink = PostgresSink(settings, lambda k, t: schema if (k, t) == (ks, "items") else None)
    part = sink.build_part("bench", "0", None)
    now = datetime.datetime(2026, 1, 1)

    def batch(version: int) -> list[RowUpsert]:
        return [RowUpsert(ks, "items", {"tenant": f"t{i % 50}", "id": i},
                          {"name": f"item {i}", "qty": i, "price": i * 0.5, "at": now,
                           "ref": uuid.UUID(int=i)}, version,
                          Source("n1", Position(1, i + 1))) for i in range(args.rows)]

    part.write_batch(batch(1)[:1])  # create the tables outside the timings
    results: dict[str, list[float]] = {"new": [], "newer": [], "stale": []}
    try:
        for run in range(args.repeat):
            with part._pool.connection() as conn:  # noqa: SLF001 - the benchmark's own partition
                conn.execute(sql.SQL("TRUNCATE {}.{}").format(
                    sql.Identifier("cdc"), sql.Identifier(f"{ks}__items")))
                conn.commit()
            for case, version in (("new", 10 + run * 10), ("newer", 15 + run * 10),
                                  ("stale", 11 + run * 10)):
                ops = batch(version)
                start = time.perf_counter()
                part.write_batch(ops)
                results[case].append(args.rows / (time.perf_counter() - start))
    finally:
        with part._pool.connection() as conn:  # noqa: SLF001
            for suffix in ("__current", ""):
                kind = "VIEW" if suffix else "TABLE"
                conn.execute(sql.SQL(f"DROP {kind} IF EXISTS {{}}.{{}}").format(  # noqa: S608
                    sql.Identifier("cdc"), sql.Identifier(f"{ks}__items{suffix}")))
            conn.execute("DELETE FROM cdc._cdc_progress WHERE step_id = 'bench'")
            conn.commit()
        part.close()
    for case, rates in results.items():
        print(f"{case:6s} {args.rows} rows/batch: median {statistics.median(rates):,.0f} rows/s "
              f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})")


if __name__ == "__main__":
    main()
