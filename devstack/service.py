"""What every service of the stack offers the `devstack` command."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ServiceStatus:
    """A line of `devstack status`: what runs where, over which protocol, and whether it is well."""

    name: str
    address: str
    running: bool
    healthy: bool
    version: str = "-"
    tls: str = "-"  # the protocol a real connection negotiated, e.g. "TLSv1.3"
    detail: str = ""


class Service(Protocol):
    name: str

    def install(self) -> None:
        """Install what is missing (packages, jars); idempotent, may be slow the first time."""

    def start(self) -> None:
        """Start (or leave running) and wait until healthy; idempotent."""

    def stop(self) -> None:
        """Stop what this service started, by PID; also clears state a crash left behind."""

    def status(self) -> list[ServiceStatus]:
        """One entry per process (e.g. per Cassandra node), from real connections."""

    def log_paths(self) -> list[Path]:
        """The log files worth reading when something fails."""
