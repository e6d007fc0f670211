"""Fixtures of the ClickHouse sink tests: the pipeline user in database `cdc` (the only one it
may use), a unique keyspace name per test so its tables ("<ks>__<table>") are its own, and a
unique step id so its _cdc_progress rows are too; the tables are dropped after the test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from clickhouse_connect.driver.binding import quote_identifier as q
from clickhouse_connect.driver.client import Client

from connectors.cassandra.events import Position
from connectors.cassandra.schema import TableSchema
from connectors.clickhouse import ClickHouseSink, ClickHouseSinkSettings
from operators.row_ops import ClusteringBound, RangeDelete, RowDelete, RowUpsert, Source
from tests.connectors.postgres.conftest import column, schemas

NODE = "10.0.0.1"
_offset = iter(range(1, 10**9))


def tables_for(ks: str) -> dict[tuple[str, str], TableSchema]:
    """Two tables for range deletes (ASC and DESC clustering) with a static column, a plain
    one: the PostgreSQL sink tests' tables, in keyspace KS."""
    return schemas([
        column("asc_t", "p", "partition_key", "text", 0, keyspace=ks),
        column("asc_t", "a", "clustering", "int", 0, "asc", keyspace=ks),
        column("asc_t", "b", "clustering", "text", 1, "asc", keyspace=ks),
        column("asc_t", "v", "regular", "text", keyspace=ks),
        column("asc_t", "n", "regular", "bigint", keyspace=ks),
        column("asc_t", "s", "static", "text", keyspace=ks),
        column("desc_t", "p", "partition_key", "text", 0, keyspace=ks),
        column("desc_t", "a", "clustering", "int", 0, "desc", keyspace=ks),
        column("desc_t", "t", "clustering", "timeuuid", 1, "asc", keyspace=ks),
        column("desc_t", "v", "regular", "text", keyspace=ks),
        column("kv", "k", "partition_key", "int", 0, keyspace=ks),
        column("kv", "v", "regular", "text", keyspace=ks),
        column("kv", "addr", "regular", "inet", keyspace=ks),
    ])


def src(node: str = NODE) -> Source:
    return Source(node, Position(1700000000000, next(_offset)))


@dataclass
class Env:
    """One test's keyspace, step id, sink settings and an admin-free pipeline client."""

    ks: str
    step: str
    settings: ClickHouseSinkSettings
    client: Client

    def sink(self, tables=None, masked=None) -> ClickHouseSink:
        tables = tables if tables is not None else tables_for(self.ks)
        return ClickHouseSink(self.settings, lambda ks, t: tables.get((ks, t)),
                              (lambda ks, t: masked.get((ks, t), {})) if masked else None)

    def part(self, tables=None, masked=None, for_part: str = "0"):
        return self.sink(tables, masked).build_part(self.step, for_part, None)

    def up(self, table: str, key: dict, values: dict, version: int, static: bool = False,
           source: Source | None = None) -> RowUpsert:
        return RowUpsert(self.ks, table, key, values, version, source or src(), static)

    def delete(self, table: str, key: dict, version: int, static: bool = False) -> RowDelete:
        return RowDelete(self.ks, table, key, version, src(), static)

    def rng(self, table: str, pk: dict, start: dict, start_incl: bool, end: dict,
            end_incl: bool, version: int, include_static: bool = False) -> RangeDelete:
        return RangeDelete(self.ks, table, pk, ClusteringBound(start, start_incl),
                           ClusteringBound(end, end_incl), version, src(), include_static)

    def name(self, table: str, suffix: str = "") -> str:
        return q(self.settings.database) + "." + q(f"{self.ks}__{table}{suffix}")

    def select(self, sql: str, parameters: dict | None = None) -> list[tuple]:
        return [tuple(r) for r in self.client.query(sql, parameters=parameters).result_rows]

    def live(self, table: str, columns: str = "*", order: str = "1") -> list[tuple]:
        return self.select(f"SELECT {columns} FROM {self.name(table, '__current')}"
                           f" ORDER BY {order}")

    def final(self, table: str, columns: str = "*", order: str = "1") -> list[tuple]:
        return self.select(f"SELECT {columns} FROM {self.name(table)} FINAL ORDER BY {order}")


@pytest.fixture(scope="session")
def ch_pipeline(clickhouse_service, creds):
    return creds("clickhouse", "pipeline")


@pytest.fixture
def env(clickhouse_service, ch_pipeline) -> Iterator[Env]:
    from devstack import clickhouse
    from devstack.certs import ensure_certificates

    settings = ClickHouseSinkSettings(
        host=clickhouse.HOST, port=clickhouse.HTTPS_PORT, database=clickhouse.DATABASE,
        user=ch_pipeline.username, password_ref="openbao:cdc/clickhouse/pipeline#password",
        ca_cert=str(ensure_certificates().ca_cert), partitions=2, retry_backoff=0.05,
        retry_attempts=3)
    ks = f"t{uuid.uuid4().hex[:12]}"
    client = clickhouse.connect("pipeline", password=ch_pipeline.password)
    yield Env(ks, f"ch_out_{ks}", settings, client)
    names = client.query("SELECT name FROM system.tables WHERE database = %(db)s"
                         " AND startsWith(name, %(prefix)s)",
                         parameters={"db": settings.database, "prefix": f"{ks}__"}).result_rows
    # Views first: they read the tables.
    for (name,) in sorted(names, key=lambda r: not r[0].endswith("__current")):
        client.command(f"DROP TABLE IF EXISTS {q(settings.database)}.{q(name)}")
    progress = f"{q(settings.database)}.{q('_cdc_progress')}"
    if client.command(f"EXISTS TABLE {progress}"):
        client.command(f"ALTER TABLE {progress} DELETE WHERE endsWith(step_id, %(step)s)",
                       parameters={"step": f"ch_out_{ks}"})
    client.close()
