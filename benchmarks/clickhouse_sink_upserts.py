"""Insert rate of the ClickHouse sink: one write_batch of N RowUpserts, as the flow calls it.

    python benchmarks/clickhouse_sink_upserts.py [--rows 10000] [--repeat 3]

Against the devstack ClickHouse (18.16, started if needed), through a real sink partition
(pipeline user, password from OpenBao, verified HTTPS TLS 1.3, no compression). Cases and table:
benchmarks/sink_bench.py (stale rows are inserted too: FINAL and merges discard them), plus
`range`: one RangeDelete of a whole 200-row partition (a FINAL read + tombstones), per second.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script: the repository root (for `benchmarks.`) is not on the path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import time

from clickhouse_connect.driver.binding import quote_identifier as q

from benchmarks.sink_bench import (
    TABLE,
    arguments,
    clickhouse_sink_part,
    collector_as_in_the_pipeline,
    report,
    run_cases,
)
from connectors.cassandra.events import Position
from operators.row_ops import ClusteringBound, RangeDelete, Source


def main() -> None:
    args = arguments(__doc__)
    print(collector_as_in_the_pipeline())
    from devstack import clickhouse

    ks, part = clickhouse_sink_part("bench_{ks}")
    step = f"bench_{ks}"
    admin = clickhouse.connect("admin")
    table = f"{q('cdc')}.{q(f'{ks}__{TABLE}')}"

    def range_delete(run: int) -> tuple[str, float]:
        everything = ClusteringBound({}, True)
        op = RangeDelete(ks, TABLE, {"tenant": f"t{run}"}, everything, everything,
                         100 + run * 10, Source("n1", Position(2, run + 1)))
        start = time.perf_counter()
        part.write_batch([op])
        return "range", 1 / (time.perf_counter() - start)

    try:
        results = run_cases(part, ks, args, lambda: admin.command(f"TRUNCATE TABLE {table}"),
                            range_delete)
    finally:
        for suffix in ("__current", ""):
            admin.command(f"DROP TABLE IF EXISTS {q('cdc')}.{q(f'{ks}__{TABLE}{suffix}')}")
        admin.command(f"ALTER TABLE {q('cdc')}.{q('_cdc_progress')} DELETE WHERE"
                      " step_id = %(s)s", parameters={"s": step})
        admin.close()
        part.close()
    report(results, args.rows, {"range": "range deletes/s"})


if __name__ == "__main__":
    main()
