"""python -m devstack up|down|status|logs|env: the project's local stack on loopback."""

from __future__ import annotations

import argparse
import sys

from devstack import process, stack
from devstack.process import StackError


def _versions(text: str) -> tuple[int, ...]:
    versions = tuple(int(v) for v in text.split(","))
    if not set(versions) <= {7, 8}:
        raise argparse.ArgumentTypeError("commit-log versions are 7 and/or 8, e.g. 7,8")
    return versions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="install what is missing and start the services")
    up.add_argument(
        "--nodes",
        type=int,
        choices=(1, 3),
        default=1,
        help="Cassandra nodes per cluster (1 or 3; the replica tests use their own r8 cluster)",
    )
    up.add_argument(
        "--versions",
        type=_versions,
        default=(7, 8),
        help="commit-log versions to run a Cassandra cluster for (default 7,8)",
    )
    up.add_argument(
        "--only",
        type=lambda s: s.split(","),
        default=list(stack.SERVICE_NAMES),
        help=f"comma-separated subset of {','.join(stack.SERVICE_NAMES)}",
    )
    down = commands.add_parser("down", help="stop everything the stack started (by PID)")
    down.add_argument("--only", type=lambda s: s.split(","), default=list(stack.SERVICE_NAMES))
    down.add_argument("--keep", type=lambda s: [n for n in s.split(",") if n], default=None,
                      help="instead: stop every process but these (names `running` printed)")
    commands.add_parser("running", help="the names of the stack's live processes, one a line")
    commands.add_parser("status", help="each service: address, version, TLS protocol, health")
    logs = commands.add_parser("logs", help="print the paths of the services' logs, or tail one")
    logs.add_argument("service", nargs="?", choices=stack.SERVICE_NAMES)
    logs.add_argument("-n", type=int, default=40, help="lines to show")
    commands.add_parser("env", help="shell exports that point a pipeline at the stack (no secrets)")
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            stack.up(args.only, versions=args.versions, nodes=args.nodes)
            _print_status(stack.status(args.only))
        elif args.command == "down" and args.keep is not None:
            stack.stop_all_but(args.keep)
        elif args.command == "down":
            stack.down(args.only)
        elif args.command == "running":
            print("\n".join(process.running()))
        elif args.command == "status":
            rows = stack.status()
            _print_status(rows)
            return (
                0
                if all(r.healthy for r in rows if r.running) and any(r.running for r in rows)
                else 1
            )
        elif args.command == "logs":
            for service in stack.services([args.service] if args.service else stack.SERVICE_NAMES):
                for path in service.log_paths():
                    if args.service and path.exists():
                        print(f"==> {path} <==")
                        print("\n".join(path.read_text(errors="replace").splitlines()[-args.n :]))
                    elif not args.service:
                        print(path)
        elif args.command == "env":
            for key, value in stack.client_environment().items():
                print(f"export {key}={value}")
    except StackError as error:
        print(f"devstack: {error}", file=sys.stderr)
        return 1
    return 0


def _print_status(rows) -> None:
    header = ("SERVICE", "ADDRESS", "STATE", "VERSION", "TLS", "DETAIL")
    table = [header] + [
        (
            r.name,
            r.address,
            ("healthy" if r.healthy else "UNHEALTHY") if r.running else "stopped",
            r.version,
            r.tls,
            r.detail,
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header) - 1)]
    for row in table:
        print(
            "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False))
            + "  "
            + str(row[-1])
        )


if __name__ == "__main__":
    sys.exit(main())
