"""Fixtures shared by every test: the real local stack, started if it is not running.

Tests never read the stack's generated-credentials file: like the pipeline, they get credentials
from OpenBao with the pipeline's least-privilege token (see devstack/openbao.py).
"""

from __future__ import annotations

import contextlib
import os
import uuid
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


@pytest.fixture(scope="session")
def cassandra_clusters(openbao_env):
    """{commit-log version: ClusterInfo} of both Cassandra clusters, started and healthy.

    A cluster keeps the node count it was created with (1, or 3 after `devstack up --nodes 3`):
    the fixture starts each with its own count, so these tests run against either.
    """
    from devstack.cassandra import CLUSTERS, CassandraService, cluster_info, configured_nodes

    by_size: dict[int, list[int]] = {}
    for version, cluster in CLUSTERS.items():
        by_size.setdefault(configured_nodes(cluster) or 1, []).append(version)
    for nodes, versions in by_size.items():  # clusters of one size boot together: quicker
        CassandraService(versions=tuple(versions), nodes=nodes).start()
    infos = {version: cluster_info(version) for version in CLUSTERS}
    for info in infos.values():
        for cdc_raw in info.cdc_raw_dirs:
            _prune_cdc_raw(cdc_raw)
    return infos


@pytest.fixture(scope="module")
def replica_cluster(openbao_env):
    """ClusterInfo of the 3-node replica tests' cluster (REPLICAS), started for the module that
    asks and stopped after it if it was not running before (3 JVMs slow every later test)."""
    from devstack import process
    from devstack.cassandra import REPLICAS, CassandraService, cluster_info
    from devstack.cassandra_config import node_specs

    service = CassandraService(clusters=(REPLICAS,), nodes=3)
    was_running = all(process.tracked(n.name) for n in node_specs(REPLICAS, 3))
    service.start()
    yield cluster_info(REPLICAS)
    if not was_running:
        service.stop()


def _prune_cdc_raw(cdc_raw, keep_below=512 * 1024 * 1024):
    """On a long-lived local stack nothing consumes cdc_raw, and at cdc_total_space (1 GiB) the
    node rejects writes to CDC tables. Past half of it, drop the COMPLETED segments: tests only
    read what they write themselves, from the current end."""
    from connectors.cassandra.cdc_index import CdcIndex
    from connectors.cassandra.tail import LocalSegmentStore

    store = LocalSegmentStore(cdc_raw)
    if store.usage_bytes() < keep_below:
        return
    for segment in store.segments():
        index = store.index(segment)
        if isinstance(index, CdcIndex) and index.completed:
            store.delete(segment)


def _started(service):
    service.install()
    service.start()
    return service


@pytest.fixture(scope="session")
def postgres_service(openbao_env):
    """The stack's PostgreSQL, installed if missing and started (idempotent; left running)."""
    from devstack.postgres import PostgresService

    return _started(PostgresService())


@pytest.fixture(scope="session")
def clickhouse_service(openbao_env):
    """The stack's ClickHouse, installed if missing and started (idempotent; left running)."""
    from devstack.clickhouse import ClickHouseService

    return _started(ClickHouseService())


@pytest.fixture
def cassandra_keyspace(cassandra_clusters, creds):
    """keyspace(version=7) -> (admin session, quoted keyspace name), dropped after the test.

    VERSION: a commit-log version (its cluster), or a ClusterSpec such as REPLICAS (started by
    the replica_cluster fixture). Replication: NetworkTopologyStrategy with RF = the cluster's
    node count (3 in 3-node mode).
    """
    from cassandra.metadata import protect_name

    from devstack.cassandra import connect
    from devstack.cassandra_config import ClusterSpec, cluster_info

    opened = []

    def make(version=7):
        info = cluster_info(version) if isinstance(version, ClusterSpec) \
            else cassandra_clusters[version]
        cluster, sess = connect(version, "admin", password=creds("cassandra", "admin").password)
        name = protect_name(f"test_{uuid.uuid4().hex[:16]}")
        rf = len(info.contact_points)
        sess.execute(f"CREATE KEYSPACE {name} WITH replication = "
                     f"{{'class': 'NetworkTopologyStrategy', 'datacenter1': {rf}}}")
        opened.append((cluster, sess, name))
        return sess, name

    yield make
    for cluster, sess, name in opened:
        try:
            sess.execute(f"DROP KEYSPACE IF EXISTS {name}")
        finally:
            cluster.shutdown()


@contextlib.contextmanager
def _fresh_schema(creds):
    """A fresh schema in database `cdc` where the pipeline role may create tables; dropped after."""
    from psycopg import sql

    from devstack import postgres

    name = f"test_{uuid.uuid4().hex[:16]}"
    pipeline = creds("postgres", "pipeline").username
    with postgres.connect(role="admin", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
            sql.Identifier(name), sql.Identifier(pipeline)))
    try:
        yield name
    finally:
        with postgres.connect(role="admin", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(name)))


@pytest.fixture
def postgres_schema(postgres_service, creds):
    """A fresh schema in database `cdc` where the pipeline role may create tables; dropped after."""
    with _fresh_schema(creds) as name:
        yield name


@pytest.fixture
def timescale_schema(postgres_service, creds):
    """Another fresh schema, for a TimescaleDB destination beside a PostgreSQL one (CI's
    PostgreSQL has no timescaledb extension: the sink runs with when_missing "plain")."""
    with _fresh_schema(creds) as name:
        yield name


@pytest.fixture
def clickhouse_database(clickhouse_service):
    """A fresh ClickHouse database (for the admin user; the pipeline user is confined to `cdc`),
    dropped after the test."""
    from clickhouse_connect.driver.binding import quote_identifier

    from devstack import clickhouse

    name = f"test_{uuid.uuid4().hex[:16]}"
    client = clickhouse.connect("admin")
    client.command(f"CREATE DATABASE {quote_identifier(name)}")
    yield name
    client.command(f"DROP DATABASE IF EXISTS {quote_identifier(name)}")
    client.close()
