"""Insert rate of the ClickHouse sink: one write_batch of N RowUpserts, as the flow calls it.

    python benchmarks/clickhouse_sink_upserts.py [--rows 10000] [--repeat 3]

Against the devstack ClickHouse (18.16, started if needed), through a real sink partition
(pipeline user, password from OpenBao, verified HTTPS TLS 1.3, no compression). A fresh
keyspace name per run; its tables are dropped at the end. Cases, each the median of --repeat:
- new: N rows that do not exist yet;
- newer: the same N keys with a higher version;
- stale: the same N keys with a lower version (inserted too: FINAL/merges discard them);
- range: one RangeDelete of a whole 200-row partition (a FINAL read + tombstones), per second.
Rows: (tenant text, id bigint) key, a text, a bigint, a double, a timestamp, a uuid.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
import uuid

from clickhouse_connect.driver.binding import quote_identifier as q

from connectors.cassandra.events import Position
from connectors.cassandra.schema import SchemaRows, build_schemas
from connectors.clickhouse import ClickHouseSink, ClickHouseSinkSettings
from operators.row_ops import ClusteringBound, RangeDelete, RowUpsert, Source


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from devstack import clickhouse, stack
    from devstack.certs import ensure_certificates
    from devstack.clickhouse import ClickHouseService

    stack.up(["openbao"], report=lambda _line: None)
    os.environ.update(stack.client_environment())
    service = ClickHouseService()
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
    settings = ClickHouseSinkSettings(
        host=clickhouse.HOST, port=clickhouse.HTTPS_PORT, database=clickhouse.DATABASE,
        user="cdc_pipeline",
        password_ref="openbao:cdc/clickhouse/pipeline#password",  # noqa: S106 - a reference
        ca_cert=str(ensure_certificates().ca_cert))
    sink = ClickHouseSink(settings, lambda k, t: schema if (k, t) == (ks, "items") else None)
    step = f"bench_{ks}"
    part = sink.build_part(step, "0", None)
    admin = clickhouse.connect("admin")
    table = f"{q('cdc')}.{q(f'{ks}__items')}"
    now = datetime.datetime(2026, 1, 1)

    def batch(version: int) -> list[RowUpsert]:
        return [RowUpsert(ks, "items", {"tenant": f"t{i % 50}", "id": i},
                          {"name": f"item {i}", "qty": i, "price": i * 0.5, "at": now,
                           "ref": uuid.UUID(int=i)}, version,
                          Source("n1", Position(1, i + 1))) for i in range(args.rows)]

    part.write_batch(batch(1)[:1])  # create the tables outside the timings
    results: dict[str, list[float]] = {"new": [], "newer": [], "stale": [], "range": []}
    try:
        for run in range(args.repeat):
            admin.command(f"TRUNCATE TABLE {table}")
            for case, version in (("new", 10 + run * 10), ("newer", 15 + run * 10),
                                  ("stale", 11 + run * 10)):
                ops = batch(version)
                start = time.perf_counter()
                part.write_batch(ops)
                results[case].append(args.rows / (time.perf_counter() - start))
            everything = ClusteringBound({}, True)
            op = RangeDelete(ks, "items", {"tenant": f"t{run}"}, everything, everything,
                             100 + run * 10, Source("n1", Position(2, run + 1)))
            start = time.perf_counter()
            part.write_batch([op])
            results["range"].append(1 / (time.perf_counter() - start))
    finally:
        for suffix in ("__current", ""):
            admin.command(f"DROP TABLE IF EXISTS {q('cdc')}.{q(f'{ks}__items{suffix}')}")
        admin.command(f"ALTER TABLE {q('cdc')}.{q('_cdc_progress')} DELETE WHERE"
                      " step_id = %(s)s", parameters={"s": step})
        admin.close()
        part.close()
    for case, rates in results.items():
        unit = "range deletes/s" if case == "range" else f"rows/s ({args.rows} rows/batch)"
        print(f"{case:6s} median {statistics.median(rates):,.0f} {unit} "
              f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})")


if __name__ == "__main__":
    main()
