"""Where the machine's CPU went between two moments, for the benchmarks' capacity figures.

The machines have 2 cores shared by every server of the stack, the load generator and the
pipeline: a throughput or latency figure only means something next to how busy the machine was
and who was busy. `Meter.start()` / `Meter.stop()` read /proc/stat (the whole machine) and
/proc/<pid>/stat of every process, and give cores used per group over the interval:

- "machine": every core's busy time (user, nice, system, irq, softirq; not idle, not waiting
  for I/O, and not steal: time the hypervisor gave to other machines);
- the stack's servers, told apart by their programs (`SERVERS`);
- any group of process trees the caller names (the pipeline's processes): a process in a named
  tree counts there, even if it is also one of the servers;
- "other": the machine's busy time nobody above accounts for: the load generator, the
  benchmark itself, processes that ended within the interval, the kernel's own threads.

A process is known by its pid and its start time, so a pid reused within the interval is a new
process, counted from zero.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")

# group -> (the program: argv[0]'s base name up to any ":", a substring of the whole
# NUL-separated command line or b""). PostgreSQL's backends rename themselves "postgres: ...".
SERVERS: tuple[tuple[str, bytes, bytes], ...] = (
    ("cassandra", b"java", b"org.apache.cassandra.service.CassandraDaemon"),
    ("postgresql", b"postgres", b""),
    ("clickhouse", b"clickhouse-server", b""),
    ("openbao", b"bao", b"\x00server"),
)

Process = tuple[int, int]  # (pid, start time in clock ticks since boot): unique over time


def machine_cores(stat: str | None = None) -> int:
    """The cores whose time `machine_busy_seconds` adds up: the cpuN lines of /proc/stat."""
    text = stat if stat is not None else Path("/proc/stat").read_text()
    return sum(1 for line in text.splitlines() if line[:3] == "cpu" and line[3:4].isdigit())


def machine_busy_seconds(stat: str | None = None) -> float:
    """CPU-seconds every core spent busy since boot, from the first line of /proc/stat: user,
    nice, system, irq and softirq (guest time is already inside user time)."""
    fields = (stat if stat is not None else Path("/proc/stat").read_text()).split("\n", 1)[0]
    user, nice, system, _idle, _iowait, irq, softirq = map(int, fields.split()[1:8])
    return (user + nice + system + irq + softirq) / _TICK


def server_of(cmdline: bytes) -> str | None:
    """The stack server a command line (/proc/<pid>/cmdline) runs, or None."""
    program = cmdline.split(b"\x00", 1)[0].rsplit(b"/", 1)[-1].split(b":", 1)[0]
    for group, name, marker in SERVERS:
        if program == name and marker in cmdline:
            return group
    return None


@dataclass(frozen=True)
class ProcessInfo:
    parent: int
    cmdline: bytes
    seconds: float  # CPU time (user + system) used so far
    rss: int = 0  # resident memory, bytes (VmRSS)


def _processes() -> dict[Process, ProcessInfo]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # ended meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold ")"
        found[(int(entry.name), int(fields[19]))] = ProcessInfo(
            int(fields[1]), cmdline, (int(fields[11]) + int(fields[12])) / _TICK,
            int(fields[21]) * _PAGE)
    return found


def rss_mib(roots: Iterable[int]) -> float:
    """Resident memory of the trees of ROOTS (each process and its descendants), MiB."""
    by_pid = {pid: info for (pid, _), info in _processes().items()}
    named = dict.fromkeys(roots, "tree")
    return sum(info.rss for pid, info in by_pid.items()
               if group_of(pid, by_pid, named) == "tree") / 2**20


def group_of(pid: int, processes: dict[int, ProcessInfo], roots: dict[int, str]) -> str | None:
    """The named tree PID is in (its nearest named ancestor, or itself), else its server,
    else None. PROCESSES: pid -> what /proc says of it now."""
    ancestor = pid
    for _ in range(64):  # a loop in the parent links (a pid reused meanwhile) ends here
        if ancestor in roots:
            return roots[ancestor]
        info = processes.get(ancestor)
        if info is None or info.parent == 0:
            break
        ancestor = info.parent
    return server_of(processes[pid].cmdline)


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic seconds, when /proc/stat was read
    busy: float  # the machine's busy CPU-seconds since boot
    seconds: dict[Process, float]  # every process's CPU-seconds so far
    groups: dict[Process, str]  # the grouped ones' groups


def sample(trees: dict[str, Iterable[int]] | None = None) -> Sample:
    """Now: the machine's busy time and every process's CPU time. TREES: group -> root pids
    whose descendants (and themselves) belong to it."""
    roots = {pid: group for group, pids in (trees or {}).items() for pid in pids}
    processes = _processes()
    at, busy = time.monotonic(), machine_busy_seconds()
    by_pid = {pid: info for (pid, _), info in processes.items()}
    groups = {}
    for process in processes:
        group = group_of(process[0], by_pid, roots)
        if group is not None:
            groups[process] = group
    return Sample(at, busy, {p: info.seconds for p, info in processes.items()}, groups)


@dataclass(frozen=True)
class Usage:
    """What `cores` gives, over SECONDS of wall time."""

    seconds: float
    cores: dict[str, float]  # "machine" first, "other" last

    def per_item(self, items: int) -> dict[str, float]:
        """CPU-milliseconds per item, per group, for ITEMS done in the interval."""
        return {group: used * self.seconds * 1000 / max(items, 1)
                for group, used in self.cores.items()}


def cores(before: Sample, after: Sample) -> Usage:
    """Cores used per group between BEFORE and AFTER, in AFTER's groups. A process's CPU time
    counts from its BEFORE reading (whatever its group was then), or from zero if it was born
    in between; one that ended in between is in "other"."""
    elapsed = max(after.at - before.at, 1e-9)
    used: dict[str, float] = {}
    for process, group in after.groups.items():
        spent = after.seconds[process] - before.seconds.get(process, 0.0)
        used[group] = used.get(group, 0.0) + max(0.0, spent)
    machine = after.busy - before.busy
    result = {"machine": machine / elapsed}
    result.update({group: used[group] / elapsed for group in sorted(used)})
    result["other"] = max(0.0, machine - sum(used.values())) / elapsed
    return Usage(elapsed, result)


def describe(usage: Usage) -> str:
    """'machine 1.93 of 2 cores busy: cassandra 1.02, pipeline 0.61, ..., other 0.20'."""
    parts = [f"{group} {value:.2f}" for group, value in usage.cores.items()
             if group != "machine"]
    return (f"machine {usage.cores['machine']:.2f} of {machine_cores()} cores busy: "
            + ", ".join(parts))


class Meter:
    """`start()`, then `stop()` -> the Usage of the interval (see `cores`)."""

    def __init__(self, trees: Callable[[], dict[str, Iterable[int]]] | None = None) -> None:
        self._trees = trees or dict
        self._before: Sample | None = None

    def start(self) -> None:
        self._before = sample(self._trees())

    def stop(self) -> Usage:
        assert self._before is not None, "Meter.stop() before start()"
        return cores(self._before, sample(self._trees()))
