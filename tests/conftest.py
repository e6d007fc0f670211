"""Fixtures shared by every test: the real local stack, started if it is not running.

Tests never read the stack's generated-credentials file: like the pipeline, they get credentials
from OpenBao with the pipeline's least-privilege token (see devstack/openbao.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Credential:
    username: str
    password: str

    def __repr__(self) -> str:  # keep passwords out of pytest's failure output
        return f"Credential(username={self.username!r}, password=***)"


@pytest.fixture(scope="session")
def openbao_env() -> dict[str, str]:
    """OpenBao running and unsealed; the BAO_* variables exported for the code under test."""
    from devstack import stack

    stack.up(["openbao"], report=lambda _line: None)
    environment = stack.client_environment()
    os.environ.update(environment)
    return environment


@pytest.fixture(scope="session")
def creds(openbao_env):
    """creds(service, role) -> Credential read from OpenBao, e.g. creds("postgres", "pipeline").

    Services: cassandra, postgres, clickhouse; roles: admin, pipeline.
    """
    from connectors.secrets import SecretResolver

    resolver = SecretResolver()

    def lookup(service: str, role: str) -> Credential:
        path = f"cdc/{service}/{role}"
        return Credential(
            resolver.resolve(f"openbao:{path}#username"),
            resolver.resolve(f"openbao:{path}#password"),
        )

    return lookup
