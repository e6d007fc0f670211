"""The stack's PostgreSQL: TLS 1.3 only over TCP, and a pipeline role confined to schema cdc."""

from __future__ import annotations

import socket
import ssl
import struct
import uuid

import psycopg
import pytest
from psycopg import errors, sql

from devstack.postgres import HOST, PORT, connect
from devstack.tlsprobe import client_context

# PostgreSQL starts TLS inside its own protocol: an SSLRequest, answered by one byte, 'S' or 'N'.
SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def _handshake(maximum: ssl.TLSVersion | None = None) -> str:
    """A verified TLS handshake with Python's ssl module; the protocol, or raises if refused."""
    with socket.create_connection((HOST, PORT), timeout=5) as raw:
        raw.sendall(SSL_REQUEST)
        assert raw.recv(1) == b"S", "the server declined the SSLRequest"
        with client_context(maximum=maximum).wrap_socket(raw, server_hostname=HOST) as tls:
            return tls.version() or "-"


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_tls13_is_negotiated(postgres_service):
    assert _handshake() == "TLSv1.3"
    with connect("cdc", "pipeline") as conn:
        ssl_on, version = conn.execute(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
    assert ssl_on is True
    assert version == "TLSv1.3"


def test_status_reports_tls13(postgres_service):
    [row] = postgres_service.status()
    assert row.running and row.healthy, row
    assert row.tls == "TLSv1.3"
    assert row.version.startswith("15.")


@pytest.mark.parametrize("role", ["admin", "pipeline"])
def test_plaintext_is_refused(postgres_service, creds, role):
    user = creds("postgres", role)
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(
            host=HOST,
            port=PORT,
            dbname="cdc",
            user=user.username,
            password=user.password,
            sslmode="disable",
            connect_timeout=5,
        )
    message = str(refused.value)
    assert "no pg_hba.conf entry" in message and "no encryption" in message, message


def test_tls12_client_is_refused(postgres_service):
    with pytest.raises(ssl.SSLError):
        _handshake(maximum=ssl.TLSVersion.TLSv1_2)
    # libpq, capped the same way, cannot connect either.
    with pytest.raises(psycopg.OperationalError):
        connect("cdc", "pipeline", ssl_max_protocol_version="TLSv1.2", connect_timeout=5)


def test_wrong_password_is_refused(postgres_service):
    with pytest.raises(psycopg.OperationalError) as refused:
        connect("cdc", "pipeline", password="not-the-password")
    assert "password authentication failed" in str(refused.value)


def test_pipeline_creates_tables_in_schema_cdc(postgres_service):
    table = _name("pipeline_owned")
    with connect("cdc", "pipeline", autocommit=True) as conn:
        # Unqualified: the role's search_path puts it in schema cdc.
        conn.execute(
            sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, v text)").format(sql.Identifier(table))
        )
        try:
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET v = excluded.v"
                ).format(sql.Identifier("cdc", table)),
                [1, "x"],
            )
            schema = conn.execute(
                "SELECT table_schema FROM information_schema.tables WHERE table_name = %s", [table]
            ).fetchone()[0]
            assert schema == "cdc"
            assert conn.execute(
                sql.SQL("SELECT v FROM {}").format(sql.Identifier("cdc", table))
            ).fetchone() == ("x",)
            # The fast upsert path stages rows in a temp table.
            conn.execute("CREATE TEMP TABLE staging (id bigint)")
        finally:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("cdc", table)))


def test_pipeline_cannot_create_in_public(postgres_service):
    with connect("cdc", "pipeline", autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(
                sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier("public", _name("nope")))
            )


def test_pipeline_cannot_read_admin_tables(postgres_service):
    tables = [
        sql.Identifier("public", _name("admin_only")),
        sql.Identifier("cdc", _name("admin_only")),
    ]
    with connect("cdc", "admin", autocommit=True) as admin:
        for table in tables:
            admin.execute(sql.SQL("CREATE TABLE {} (secret text)").format(table))
            admin.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(table), ["admin's"])
        try:
            with connect("cdc", "pipeline", autocommit=True) as conn:
                for table in tables:
                    with pytest.raises(errors.InsufficientPrivilege):
                        conn.execute(sql.SQL("SELECT * FROM {}").format(table))
                    with pytest.raises(errors.InsufficientPrivilege):
                        conn.execute(sql.SQL("DROP TABLE {}").format(table))
        finally:
            for table in tables:
                admin.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))


def test_pipeline_cannot_reach_other_databases_or_escalate(postgres_service):
    with pytest.raises(psycopg.OperationalError) as refused:
        connect("postgres", "pipeline")
    assert "permission denied for database" in str(refused.value)
    with connect("cdc", "pipeline", autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(_name("nope"))))
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(_name("nope"))))
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DROP SCHEMA cdc")
