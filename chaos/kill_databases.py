"""Kill the local stack's databases with SIGKILL at random moments, and bring them back.

    python chaos/kill_databases.py [--count 3] [--min 5] [--max 15] [--down 10]
                                   [--only postgres,clickhouse,cassandra] [--seed N]

Each round, after a random wait between --min and --max seconds, picks one of the --only
databases that runs in the local stack (the processes devstack started and tracks by PID file
under $CDC_STACK_HOME: nothing else can be picked, so it cannot reach a deployment), SIGKILLs
its process group as a crash would (Cassandra: one of its running nodes), keeps it down --down
seconds, then starts it again and waits until it is healthy. A database it killed is started
again however the script stops (an error, Ctrl-C, SIGTERM). Exits 1 if a round found none of
them running.

It checks nothing about the pipeline: run one beside it (`scripts/demo --patients 20000` with
`--only postgres,clickhouse`, or your own) and compare every destination with Cassandra
afterwards. The pipeline is expected to ride it out: a destination down is retried from its
spool (ADR 0006). Kill Cassandra only where its keyspaces have other replicas (`devstack up
--nodes 3` and RF 3): the demo's single node holds its only replica, and its own load fails.
"""

from __future__ import annotations

import random
import signal
import sys
import time
from pathlib import Path

# Run as a script: the repository root (for `chaos`, `devstack`) is not on the path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chaos import rounds  # noqa: E402 - after the path is set
from devstack import process, stack  # noqa: E402

DATABASES = ("postgres", "clickhouse", "cassandra")


def running_processes(database: str) -> list[str]:
    """The names (PID files) of DATABASE's live processes in the local stack."""
    if database == "cassandra":  # the stack's clusters c7, c8; not the replica tests' r8
        return [name for name in process.running() if name.startswith("cassandra-c")]
    return [database] if process.tracked(database) is not None else []


def _service(name: str, running_before: list[str]):
    """The devstack service that starts NAME again (a Cassandra node: its cluster, at the node
    count that ran)."""
    if not name.startswith("cassandra-"):
        return stack.services([name])[0]
    cluster = name.split("-")[1]  # cassandra-c7-node1 -> c7
    nodes = sum(1 for n in running_before if n.startswith(f"cassandra-{cluster}-"))
    return stack.services(["cassandra"], versions=(int(cluster[1:]),), nodes=nodes)[0]


def main(argv: list[str] | None = None) -> int:
    parser = rounds.parser(__doc__)
    parser.set_defaults(count=3, min=5.0, max=15.0)
    parser.add_argument("--down", type=float, default=10.0,
                        help="seconds a killed database stays down")
    parser.add_argument("--only", default=",".join(DATABASES),
                        help=f"comma-separated, of {', '.join(DATABASES)}")
    args = parser.parse_args(argv)
    rounds.check(parser, args)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    if not only or any(name not in DATABASES for name in only):
        parser.error(f"--only: {args.only!r} is not a list of {', '.join(DATABASES)}")
    if args.down < 0:
        parser.error(f"--down: must be at least 0, not {args.down}")
    down: list[tuple[str, object]] = []  # (process name, its service) killed, not back yet

    def one_round(round_: int, rng: random.Random) -> bool:
        candidates = [name for database in only for name in running_processes(database)]
        if not candidates:
            print(f"round {round_}: none of {', '.join(only)} runs in the local stack",
                  file=sys.stderr)
            return False
        victim = rng.choice(candidates)
        service = _service(victim, candidates)
        process.kill(victim)
        down.append((victim, service))
        print(f"round {round_}: SIGKILL {victim}; down for {args.down:g} s", flush=True)
        time.sleep(args.down)
        began = time.monotonic()
        service.start()
        down.pop()
        print(f"round {round_}: {victim} healthy again after "
              f"{time.monotonic() - began:.1f} s", flush=True)
        return True

    # SIGTERM as Ctrl-C: the finally below starts again what is down.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return rounds.run(args, one_round)
    finally:
        for victim, service in down:
            print(f"starting {victim} again", file=sys.stderr)
            service.start()
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
