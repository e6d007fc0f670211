"""Kill the pipeline's workers with SIGKILL at random moments, as a crash would.

    python chaos/kill_workers.py [--count 5] [--min 3] [--max 7] [--match "dataflows.main"]

Finds the processes of this user whose command line contains --match (default: the pipeline
started with `python -m bytewax.run dataflows.main`), waits a random time between --min and
--max seconds, SIGKILLs one of them and the processes it started, and repeats --count times.
Not its process group: a pipeline started from a script shares that script's group (and this
one's), which killing the group took down too. It does not restart anything: whatever
supervises the pipeline (Kubernetes, systemd, the test) must. Bounded in count and time.

A process is signalled only if it is still the one found (its start time unchanged: a PID the
kernel handed to another process is left alone), never PID 1 (inside a container the signal
would be ignored while seeming sent). Exits 1 when a round found nothing to kill (a mistyped
--match, a pipeline nobody restarted), so a run that did nothing does not pass for one that
did. It checks nothing else: the tests that claim exactly-once (tests/dataflows) pair such
kills with the correctness oracle.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from pathlib import Path

# Run as a script: the repository root (for `devstack`) is not on the path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chaos import rounds  # noqa: E402 - after the path is set
from devstack.process import start_time  # noqa: E402


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, owner uid, command line) of every process readable now."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            # Field 4 of stat, after the command name in parentheses (which may hold spaces).
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            owner = proc.stat().st_uid
        except (OSError, IndexError, ValueError):
            continue
        found[int(proc.name)] = (parent, owner, command)
    return found


def matching(pattern: str) -> list[int]:
    """The pids of this user's processes whose command line holds PATTERN: not this one, nor
    one that started it (a wrapper holding the pattern would take this script with it)."""
    processes = _processes()
    ancestors, pid = set(), os.getpid()
    while pid in processes and pid not in ancestors:
        ancestors.add(pid)
        pid = processes[pid][0]
    return [pid for pid, (_parent, owner, command) in processes.items()
            if owner == os.getuid() and pid not in ancestors and pid != 1
            and pattern in command and "kill_workers" not in command]


def _with_descendants(pid: int) -> list[int]:
    """PID and every process started under it, parents first."""
    children: dict[int, list[int]] = {}
    for child, (parent, _owner, _command) in _processes().items():
        children.setdefault(parent, []).append(child)
    order, queue = [], [pid]
    while queue:
        current = queue.pop(0)
        order.append(current)
        queue += children.get(current, [])
    return order


def _kill(pids: list[int]) -> list[int]:
    """SIGKILL each of PIDS that is still the process found (start time read first, checked
    again just before the signal); the ones signalled."""
    found = {pid: start_time(pid) for pid in pids}
    killed = []
    for pid, started in found.items():
        if started is None or start_time(pid) != started:
            continue  # gone, or its PID is another process's now
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (ProcessLookupError, PermissionError):
            continue
    return killed


def main(argv: list[str] | None = None) -> int:
    parser = rounds.parser(__doc__)
    parser.add_argument("--match", default="dataflows.main",
                        help="text of the command lines to kill (at least 4 characters)")
    args = parser.parse_args(argv)
    rounds.check(parser, args)
    if len(args.match.strip()) < 4:
        parser.error(f"--match: {args.match!r} would match nearly every process of this user")

    def one_round(round_: int, rng: random.Random) -> bool:
        victims = matching(args.match)
        if not victims:
            print(f"round {round_}: no process matches {args.match!r}", file=sys.stderr)
            return False
        victim = rng.choice(victims)
        killed = _kill(_with_descendants(victim))
        if victim not in killed:
            print(f"round {round_}: pid {victim} was already gone", file=sys.stderr)
            return False
        print(f"round {round_}: SIGKILL pid {victim} and {len(killed) - 1} process(es) "
              "it started", flush=True)
        return True

    return rounds.run(args, one_round)


if __name__ == "__main__":
    sys.exit(main())
