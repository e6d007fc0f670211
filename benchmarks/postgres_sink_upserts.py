"""Upsert rate of the PostgreSQL sink: one write_batch of N RowUpserts, as the flow calls it.

    python benchmarks/postgres_sink_upserts.py [--rows 10000] [--repeat 3]

Against the devstack PostgreSQL (started if needed), through a real sink partition (password
from OpenBao, verified TLS 1.3, pool of one). Cases and table: benchmarks/sink_bench.py. A
fresh keyspace name per run; its tables are dropped at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script: the repository root (for `benchmarks.`) is not on the path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from psycopg import sql

from benchmarks.sink_bench import (
    TABLE,
    arguments,
    collector_as_in_the_pipeline,
    postgres_sink_part,
    report,
    run_cases,
)


def main() -> None:
    args = arguments(__doc__)
    print(collector_as_in_the_pipeline())
    ks, part = postgres_sink_part("bench")

    def truncate() -> None:
        with part._pool.connection() as conn:  # noqa: SLF001 - the benchmark's own partition
            conn.execute(sql.SQL("TRUNCATE {}.{}").format(
                sql.Identifier("cdc"), sql.Identifier(f"{ks}__{TABLE}")))
            conn.commit()

    try:
        results = run_cases(part, ks, args, truncate)
    finally:
        with part._pool.connection() as conn:  # noqa: SLF001
            for suffix in ("__current", ""):
                kind = "VIEW" if suffix else "TABLE"
                conn.execute(sql.SQL(f"DROP {kind} IF EXISTS {{}}.{{}}").format(  # noqa: S608
                    sql.Identifier("cdc"), sql.Identifier(f"{ks}__{TABLE}{suffix}")))
            conn.execute("DELETE FROM cdc._cdc_progress WHERE step_id = 'bench'")
            conn.commit()
        part.close()
    report(results, args.rows)


if __name__ == "__main__":
    main()
