"""The whole stack in order: secrets first (the others' credentials live there), Cassandra last."""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from devstack import openbao, process
from devstack.certs import ensure_certificates
from devstack.paths import stack_home
from devstack.service import Service, ServiceStatus

SERVICE_NAMES = ("openbao", "postgres", "clickhouse", "cassandra")


def services(
    names: Iterable[str] = SERVICE_NAMES, *, versions=(7, 8), nodes: int = 1
) -> list[Service]:
    chosen: list[Service] = []
    for name in names:
        if name == "openbao":
            chosen.append(openbao.OpenBaoService())
        elif name == "postgres":
            from devstack.postgres import PostgresService

            chosen.append(PostgresService())
        elif name == "clickhouse":
            from devstack.clickhouse import ClickHouseService

            chosen.append(ClickHouseService())
        elif name == "cassandra":
            from devstack.cassandra import CassandraService

            chosen.append(CassandraService(versions=tuple(versions), nodes=nodes))
        else:
            raise ValueError(f"unknown service {name!r}; known: {', '.join(SERVICE_NAMES)}")
    return chosen


def up(
    names: Iterable[str] = SERVICE_NAMES, *, versions=(7, 8), nodes: int = 1, report=print
) -> dict[str, float]:
    """Install what is missing and start each service; returns seconds spent per service."""
    ensure_certificates()
    timings: dict[str, float] = {}
    for service in services(names, versions=versions, nodes=nodes):
        began = time.monotonic()
        service.install()
        service.start()
        timings[service.name] = time.monotonic() - began
        report(f"{service.name}: up in {timings[service.name]:.1f} s")
    return timings


def down(names: Iterable[str] = SERVICE_NAMES, report=print) -> None:
    """Stop every service by PID, in reverse order (Cassandra: every cluster and node count)."""
    for service in reversed(services(names, nodes=3)):
        service.stop()
        report(f"{service.name}: stopped")


def stop_all_but(kept: Iterable[str], report=print) -> None:
    """Stop every live process of the stack but those named in KEPT (`process.running()` names,
    as they were before a command started its own), service by service, Cassandra first,
    OpenBao last, the processes of one service at once (as CassandraService.stop does its
    nodes): what scripts/test leaves behind is what ran before it, not whole services it
    found half up."""
    kept = set(kept)
    order = {name: i for i, name in enumerate(SERVICE_NAMES)}

    def service_of(name: str) -> int:
        return next((i for prefix, i in order.items() if name.startswith(prefix)), len(order))

    by_service: dict[int, list[str]] = {}
    for name in sorted(set(process.running()) - kept):
        by_service.setdefault(service_of(name), []).append(name)
    for _, names in sorted(by_service.items(), reverse=True):
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            list(pool.map(process.stop, names))
        for name in names:
            report(f"{name}: stopped")


def status(names: Iterable[str] = SERVICE_NAMES) -> list[ServiceStatus]:
    found: list[ServiceStatus] = []
    for service in services(names):
        found.extend(service.status())
    return found


def client_environment() -> dict[str, str]:
    """What the pipeline and the tests need to find OpenBao: addresses and file paths, no secret."""
    return {
        "BAO_ADDR": openbao.ADDRESS,
        "BAO_CACERT": str(ensure_certificates().ca_cert),
        "BAO_TOKEN_FILE": str(openbao.pipeline_token_path()),
        "CDC_STACK_HOME": str(stack_home()),
    }
