"""Kill the pipeline's workers with SIGKILL at random moments, as a crash would.

    python chaos/kill_workers.py [--count 5] [--min 3] [--max 7] [--match "dataflows.main"]

Finds the processes whose command line contains --match (default: the pipeline started with
`python -m bytewax.run dataflows.main`), waits a random time between --min and --max seconds,
SIGKILLs one of them (its whole process group), and repeats --count times. It does not restart
anything: whatever supervises the pipeline (Kubernetes, systemd, the test) must. Bounded in
count and time; touches only local processes of this user.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time
from pathlib import Path


def matching(pattern: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if pattern in command and "kill_workers" not in command:
            found.append(int(proc.name))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--min", type=float, default=3.0)
    parser.add_argument("--max", type=float, default=7.0)
    parser.add_argument("--match", default="dataflows.main")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    for round_ in range(1, args.count + 1):
        time.sleep(rng.uniform(args.min, args.max))
        victims = matching(args.match)
        if not victims:
            print(f"round {round_}: no process matches {args.match!r}", file=sys.stderr)
            continue
        victim = rng.choice(victims)
        try:
            os.killpg(os.getpgid(victim), signal.SIGKILL)
            print(f"round {round_}: SIGKILL process group of pid {victim}")
        except ProcessLookupError:
            print(f"round {round_}: pid {victim} was already gone", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
