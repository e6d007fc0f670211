"""Fixtures of the PostgreSQL sink tests: settings for the stack's server, table schemas built
from system_schema-like rows, a sink whose partitions write into a fresh schema."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from connectors.cassandra.schema import SchemaRows, TableSchema, build_schemas
from connectors.postgres import PostgresSink, PostgresSinkSettings

KS = "shop"


def column(table: str, name: str, kind: str, cql: str, position: int = -1,
           order: str = "none", keyspace: str = KS) -> dict:
    return {"keyspace_name": keyspace, "table_name": table, "column_name": name, "kind": kind,
            "position": position, "clustering_order": order, "type": cql}


def schemas(columns: list[dict], types: list[dict] | None = None) -> dict[tuple[str, str],
                                                                           TableSchema]:
    """TableSchemas by (keyspace, table) for the tables the COLUMNS rows describe."""
    names = sorted({(c["keyspace_name"], c["table_name"]) for c in columns})
    ids = {name: uuid.uuid4() for name in names}
    table_rows = [{"keyspace_name": ks, "table_name": t, "id": ids[(ks, t)], "cdc": True,
                   "flags": {"compound"}} for ks, t in names]
    rows = SchemaRows(all_tables=table_rows, tables=table_rows, views=[], columns=columns,
                      types=types or [], dropped_columns=[])
    built, _ = build_schemas(rows)
    return {(s.keyspace, s.name): s for s in built.values()}


# Two tables for range deletes (ASC and DESC clustering) with a static column, and a plain one.
TABLES = schemas([
    column("asc_t", "p", "partition_key", "text", 0),
    column("asc_t", "a", "clustering", "int", 0, "asc"),
    column("asc_t", "b", "clustering", "text", 1, "asc"),
    column("asc_t", "v", "regular", "text"),
    column("asc_t", "n", "regular", "bigint"),
    column("asc_t", "s", "static", "text"),
    column("desc_t", "p", "partition_key", "text", 0),
    column("desc_t", "a", "clustering", "int", 0, "desc"),
    column("desc_t", "t", "clustering", "timeuuid", 1, "asc"),
    column("desc_t", "v", "regular", "text"),
    column("kv", "k", "partition_key", "int", 0),
    column("kv", "v", "regular", "text"),
    column("kv", "addr", "regular", "inet"),
])


@pytest.fixture(scope="session")
def pg_password(creds) -> str:
    return creds("postgres", "pipeline").password


@pytest.fixture
def settings(postgres_service, postgres_schema, creds) -> PostgresSinkSettings:
    from devstack import postgres
    from devstack.certs import ensure_certificates

    return PostgresSinkSettings(
        host=postgres.HOST, port=postgres.PORT, dbname=postgres.DATABASE,
        user=creds("postgres", "pipeline").username,
        password_ref="openbao:cdc/postgres/pipeline#password",
        sslrootcert=str(ensure_certificates().ca_cert), schema=postgres_schema, partitions=2,
        retry_backoff=0.05, retry_attempts=3)


@pytest.fixture
def conn(settings, pg_password) -> Iterator[psycopg.Connection]:
    with psycopg.connect(**settings.connection_kwargs(pg_password), autocommit=True) as c:
        yield c


def make_sink(settings: PostgresSinkSettings, tables=TABLES, masked=None,
              **options) -> PostgresSink:
    """A sink over TABLES; OPTIONS: PostgresSink's keyword arguments (merge, direct_copy)."""
    return PostgresSink(settings, lambda ks, t: tables.get((ks, t)),
                        (lambda ks, t: masked.get((ks, t), {})) if masked else None, **options)


@pytest.fixture
def part(settings):
    """A built sink partition (partition 0) of a sink over TABLES."""
    built = make_sink(settings).build_part("pg_out", "0", None)
    yield built
    built.close()


def rows(conn: psycopg.Connection, schema: str, table: str, columns: str = "*",
         order: str = "1") -> list[tuple]:
    return conn.execute(sql.SQL("SELECT {} FROM {}.{} ORDER BY {}").format(
        sql.SQL(columns), sql.Identifier(schema), sql.Identifier(table), sql.SQL(order))
    ).fetchall()
