"""Starting, finding and stopping the stack's server processes by PID file.

A PID file records the PID *and* the process's start time from /proc, so a PID that the kernel
has handed to an unrelated process after a crash is never mistaken for ours (and never killed).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack.paths import stack_home


class StackError(RuntimeError):
    """A service could not be installed, started or reached; the message says which and why."""


@dataclass(frozen=True)
class Tracked:
    name: str
    pid: int
    started: str


def _run_dir() -> Path:
    path = stack_home() / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pidfile(name: str) -> Path:
    return _run_dir() / f"{name}.pid"


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: the process's start time in clock ticks since boot."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie is as good as gone
        return None
    return fields[19]


def tracked(name: str) -> Tracked | None:
    """The live process started under NAME, or None (a stale PID file is removed)."""
    pidfile = _pidfile(name)
    try:
        pid_text, started = pidfile.read_text().split()
    except (OSError, ValueError):
        pidfile.unlink(missing_ok=True)
        return None
    pid = int(pid_text)
    if start_time(pid) != started:
        pidfile.unlink(missing_ok=True)
        return None
    return Tracked(name, pid, started)


def start(
    name: str,
    argv: Sequence[str | os.PathLike[str]],
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> Tracked:
    """Start ARGV in its own session, output to LOG_PATH, and record it under NAME.

    The process is not waited for: callers poll its health with `wait_until`.
    """
    current = tracked(name)
    if current is not None:
        return current
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - argv is built by the stack, never from input
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            user=user,
            start_new_session=True,
        )
    started = None
    for _ in range(100):
        started = start_time(proc.pid)
        if started is not None:
            break
        time.sleep(0.01)
    if started is None:
        raise StackError(f"{name} exited at once; see {log_path}")
    _pidfile(name).write_text(f"{proc.pid} {started}\n")
    return Tracked(name, proc.pid, started)


def running() -> list[str]:
    """The names of the live processes the stack started (stale PID files are removed)."""
    return sorted(p.stem for p in _run_dir().glob("*.pid") if tracked(p.stem) is not None)


def stop(name: str, *, timeout: float = 60.0) -> bool:
    """Stop NAME's whole process group: SIGTERM, then SIGKILL after TIMEOUT. True if it ran."""
    proc = tracked(name)
    if proc is None:
        return False
    if not _signal_and_wait(proc, signal.SIGTERM, timeout):
        _signal_and_wait(proc, signal.SIGKILL, None)
    _pidfile(name).unlink(missing_ok=True)
    return True


def kill(name: str) -> bool:
    """SIGKILL NAME's process group at once, as a crash would. True if it was running."""
    proc = tracked(name)
    if proc is None:
        return False
    _signal_and_wait(proc, signal.SIGKILL, None)
    _pidfile(name).unlink(missing_ok=True)
    return True


def _signal_and_wait(proc: Tracked, signum: int, timeout: float | None) -> bool:
    """Send SIGNUM to PROC's process group; True once it is gone, False if TIMEOUT passed first."""
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        return True
    deadline = None if timeout is None else time.monotonic() + timeout
    while start_time(proc.pid) == proc.started:
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def refuse_taken_port(host: str, port: int, grace: float = 5.0) -> None:
    """Before starting a server: StackError when HOST:PORT still answers after GRACE seconds,
    so a process this stack home does not track holds it (another CDC_STACK_HOME's stack, or
    a checkout's). Talking to it would fail far from the cause: its certificates are from
    another CA. The grace is for a server of ours just stopped: its last threads may hold
    the socket for a moment after its PID is gone."""
    deadline = time.monotonic() + grace
    while port_open(host, port):
        if time.monotonic() >= deadline:
            raise StackError(f"{host}:{port} is taken by a process this stack home "
                             f"({stack_home()}) does not track: another CDC_STACK_HOME's "
                             "stack? Stop that one first")
        time.sleep(0.1)


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    log_path: Path | None = None,
    process: str | None = None,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll CHECK until it is true; fail naming WHAT (and the log) on timeout or early exit:
    of the stack's PROCESS (a tracked name), or of one ALIVE says is gone."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001, S110 - a server still starting raises all sorts
            pass
        if (process is not None and tracked(process) is None) or \
                (alive is not None and not alive()):
            raise StackError(
                f"{what}: the process exited" + (f"; see {log_path}" if log_path else "")
            )
        if time.monotonic() > deadline:
            raise StackError(
                f"{what}: not ready after {timeout:.0f} s"
                + (f"; see {log_path}" if log_path else "")
            )
        time.sleep(0.2)


def run(argv: Sequence[str | os.PathLike[str]], *, what: str, **kwargs) -> str:
    """Run a set-up command to completion; on failure raise with its output, naming WHAT."""
    done = subprocess.run(  # noqa: S603
        [str(a) for a in argv], capture_output=True, text=True, check=False, **kwargs
    )
    if done.returncode != 0:
        raise StackError(
            f"{what} failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return done.stdout
