"""Where the pipeline's time goes: the flow in-process under cProfile, on a backlog.

    python benchmarks/pipeline_profile.py [--version 7] [--changes 5000] [--top 30]

Writes CHANGES rows (benchmarks/cdc_load.py) into a fresh CDC table, then runs the real flow
(dataflows.flow.build, the configuration pipeline_throughput.py generates, PostgreSQL only)
with bytewax.testing.run_main, one worker, in this thread, until the capture has caught up,
under cProfile (wall-clock times). Prints the rate and the top functions by own time and by
cumulative time. Calls waiting on another thread (the Cassandra driver's event loop, OpenBao
over HTTP, PostgreSQL) show as the time spent waiting for them. The keyspace and schema are
dropped at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import cdc_load  # noqa: E402
from benchmarks.pipeline_throughput import TABLES, Bench, load  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", type=int, choices=(7, 8), default=7)
    parser.add_argument("--changes", type=int, default=5000)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--max-records", type=int, default=500)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    args.keep_logs = False
    bench = Bench(args)
    try:
        from bytewax.testing import run_main

        from dataflows.config import load as load_config
        from dataflows.flow import build

        table = TABLES[2]
        starts = bench.cursors()
        cdc_raw = bench.mirror("profile", starts)
        results = cdc_load.write_parallel(version=args.version, keyspace=bench.name, table=table,
                                          writers=args.writers, count=args.changes)
        expected = sum(r.written for r in results)
        time.sleep(2)  # the last commit-log sync
        flow = build(load_config(bench.write_config(table, starts, cdc_raw, "profile")),
                     until_caught_up=True)
        print(f"profiling the flow on {expected:,} changes (load {load()})", flush=True)
        profile = cProfile.Profile()
        began = time.perf_counter()
        profile.enable()
        run_main(flow)
        profile.disable()
        elapsed = time.perf_counter() - began
        with bench.pg() as conn:
            arrived = bench.count(conn, table)
        print(f"{arrived:,} of {expected:,} rows in PostgreSQL in {elapsed:.1f} s: "
              f"{arrived / elapsed:,.0f} changes/s in-process under cProfile (load {load()})")
        for order in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(profile, stream=out).strip_dirs().sort_stats(order).print_stats(args.top)
            print(f"\n--- top {args.top} by {order} ---")
            print(out.getvalue().split("\n", 6)[-1] if order else out.getvalue())
    finally:
        bench.close()


if __name__ == "__main__":
    main()
