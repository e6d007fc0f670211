"""The configuration pieces the flow tests give the pipeline: the stack's servers, by reference."""

from __future__ import annotations

from typing import Any


def masking_policy(keyspace: str, table: str, columns: dict[str, dict]) -> dict:
    """A masking policy for one table, keys from the stack's OpenBao."""
    return {"masking": {
        "version": 1,
        "hmac": {"key": "openbao:cdc/masking#hmac_key"},
        "tokenize": {"mount": "transit", "key": "cdc-tokenization"},
        "tables": {keyspace: {table: {"columns": columns}}},
    }}


def cassandra_section(info, keyspace: str, node: dict[str, Any], ca_cert: str) -> dict:
    """The pipeline's Cassandra section for one node of a stack cluster (ClusterInfo)."""
    return {
        "contact_points": info.contact_points, "port": info.port, "username": "cdc_pipeline",
        "password": "openbao:cdc/cassandra/pipeline#password", "ca_cert": ca_cert,
        "consistency": "ONE", "keyspaces": [keyspace], "nodes": [node],
    }


def postgres_destination(schema: str, ca_cert: str) -> dict:
    return {
        "kind": "postgres", "host": "127.0.0.1", "port": 54329, "database": "cdc",
        "username": "cdc_pipeline", "password": "openbao:cdc/postgres/pipeline#password",
        "ca_cert": ca_cert, "partitions": 2, "options": {"schema": schema},
    }


def clickhouse_destination(ca_cert: str) -> dict:
    return {
        "kind": "clickhouse", "host": "127.0.0.1", "port": 8443, "database": "cdc",
        "username": "cdc_pipeline", "password": "openbao:cdc/clickhouse/pipeline#password",
        "ca_cert": ca_cert, "partitions": 2,
    }
