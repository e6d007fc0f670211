"""A Bytewax flow as a cluster of processes over loopback, as on separate machines: the command
line of each process (`-i` its index, `-a` every process's address). For the tests and the
benchmarks that run the pipeline that way; and free local ports, for those and other listeners.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

__all__ = ["cluster_commands", "free_ports"]


def free_ports(count: int) -> list[int]:
    """COUNT distinct local TCP ports nothing listened on a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def cluster_commands(command: Sequence[str], processes: int) -> list[list[str]]:
    """COMMAND (`python -m bytewax.run ...` without -w/-i/-a) once per process of a cluster of
    PROCESSES processes of one worker each."""
    addresses = ";".join(f"127.0.0.1:{port}" for port in free_ports(processes))
    return [[*command, "-i", str(i), "-a", addresses] for i in range(processes)]
