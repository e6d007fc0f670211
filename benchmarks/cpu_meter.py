"""Where the machine's CPU went between two moments, for the benchmarks' capacity figures.

The machines have 2 cores shared by every server of the stack, the load generator and the
pipeline: a throughput or latency figure only means something next to how busy the machine was
and who was busy. `Meter.start()` / `Meter.stop()` read /proc/stat (the whole machine) and
/proc/<pid>/stat of every process, and give cores used per group over the interval:

- "machine": every core's busy time (not idle, not waiting for I/O);
- the stack's servers, told apart by their command lines (`SERVERS`);
- any group of process trees the caller names (the pipeline's processes);
- "other": the machine's busy time nobody above accounts for: the load generator, the
  benchmark itself, processes that ended within the interval, the kernel.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")

# group -> (the program: argv[0]'s base name up to any ":", a substring of the whole
# NUL-separated command line or b""). PostgreSQL's backends rename themselves "postgres: ...".
SERVERS: tuple[tuple[str, bytes, bytes], ...] = (
    ("cassandra", b"java", b"org.apache.cassandra.service.CassandraDaemon"),
    ("postgresql", b"postgres", b""),
    ("clickhouse", b"clickhouse-server", b""),
    ("openbao", b"bao", b"\x00server"),
)


def server_of(cmdline: bytes) -> str | None:
    """The stack server a command line (/proc/<pid>/cmdline) runs, or None."""
    program = cmdline.split(b"\x00", 1)[0].rsplit(b"/", 1)[-1].split(b":", 1)[0]
    for group, name, marker in SERVERS:
        if program == name and marker in cmdline:
            return group
    return None


def machine_busy_seconds(stat: str | None = None) -> float:
    """CPU-seconds every core spent busy since boot: the first line of /proc/stat less idle
    and iowait (guest time is already inside user time)."""
    fields = (stat if stat is not None else Path("/proc/stat").read_text()).split("\n", 1)[0]
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, fields.split()[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICK


def _processes() -> dict[int, tuple[int, bytes, float]]:
    """pid -> (parent pid, command line, CPU-seconds used so far) of every process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # ended meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()
        found[int(entry.name)] = (int(fields[1]), cmdline,
                                  (int(fields[11]) + int(fields[12])) / _TICK)
    return found


def _group_of(pid: int, processes: dict[int, tuple[int, bytes, float]],
              roots: dict[int, str]) -> str | None:
    """The named tree PID is in (the nearest named ancestor), else its server, else None."""
    ancestor = pid
    for _ in range(64):  # a loop in the parent links (a pid reused meanwhile) ends here
        if ancestor in roots:
            return roots[ancestor]
        parent = processes.get(ancestor)
        if parent is None or parent[0] == 0:
            break
        ancestor = parent[0]
    return server_of(processes[pid][1])


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic seconds
    busy: float  # the machine's busy CPU-seconds since boot
    by_pid: dict[int, tuple[str, float]]  # pid -> (group, CPU-seconds so far)


def sample(trees: dict[str, Iterable[int]] | None = None) -> Sample:
    """Now: the machine's busy time and every grouped process's CPU time. TREES: group ->
    root pids whose descendants (and themselves) belong to it."""
    roots = {pid: group for group, pids in (trees or {}).items() for pid in pids}
    busy = machine_busy_seconds()
    processes = _processes()
    by_pid = {}
    for pid, (_, _, seconds) in processes.items():
        group = _group_of(pid, processes, roots)
        if group is not None:
            by_pid[pid] = (group, seconds)
    return Sample(time.monotonic(), busy, by_pid)


def cores(before: Sample, after: Sample) -> dict[str, float]:
    """Cores used per group between BEFORE and AFTER, "machine" first, "other" last. A
    process born in between counts from zero; one that ended in between is in "other"."""
    elapsed = max(after.at - before.at, 1e-9)
    used: dict[str, float] = {}
    for pid, (group, seconds) in after.by_pid.items():
        earlier = before.by_pid.get(pid)
        start = earlier[1] if earlier is not None and earlier[0] == group else 0.0
        used[group] = used.get(group, 0.0) + max(0.0, seconds - start)
    machine = after.busy - before.busy
    result = {"machine": machine / elapsed}
    result.update({group: used[group] / elapsed for group in sorted(used)})
    result["other"] = max(0.0, machine - sum(used.values())) / elapsed
    return result


def describe(used: dict[str, float]) -> str:
    """'machine 1.93 of 2 cores busy: cassandra 1.02, pipeline 0.61, ..., other 0.20'."""
    parts = [f"{group} {value:.2f}" for group, value in used.items() if group != "machine"]
    return (f"machine {used['machine']:.2f} of {os.cpu_count()} cores busy: "
            + ", ".join(parts))


class Meter:
    """`start()`, then `stop()` -> cores per group over the interval (see `cores`)."""

    def __init__(self, trees: Callable[[], dict[str, Iterable[int]]] | None = None) -> None:
        self._trees = trees or dict
        self._before: Sample | None = None

    def start(self) -> None:
        self._before = sample(self._trees())

    def stop(self) -> dict[str, float]:
        assert self._before is not None, "Meter.stop() before start()"
        return cores(self._before, sample(self._trees()))
