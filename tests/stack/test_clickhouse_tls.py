"""The stack's ClickHouse 18.16: TLS 1.3 only (HTTPS and native), no plaintext port, and users
confined as users.xml says (no passwordless default, the pipeline in database cdc only)."""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import uuid

import clickhouse_connect
import pytest
from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.exceptions import DatabaseError

from devstack.certs import ensure_certificates
from devstack.clickhouse import HOST, HTTPS_PORT, NATIVE_TLS_PORT, connect
from devstack.process import port_open
from devstack.tlsprobe import client_context, negotiated_protocol
from tests.stack.plaintext import plaintext_http_refused

TLS_PORTS = [HTTPS_PORT, NATIVE_TLS_PORT]
# ClickHouse's usual plaintext ports: HTTP, native TCP, interserver HTTP.
PLAINTEXT_PORTS = [8123, 9000, 9009]


def _native_hello() -> bytes:
    """A native-protocol Hello in plaintext; a plaintext server would answer Hello or Exception."""

    def string(text: bytes) -> bytes:
        return bytes([len(text)]) + text

    # packet 0 (Hello), client name, version 1.1, revision 54412 (varint), db, user, password
    return (
        b"\x00"
        + string(b"probe")
        + b"\x01\x01"
        + b"\x8c\xa9\x03"
        + string(b"")
        + string(b"default")
        + string(b"")
    )


def _https_post(query: str, headers: dict[str, str]) -> tuple[int, str]:
    conn = http.client.HTTPSConnection(HOST, HTTPS_PORT, context=client_context(), timeout=10)
    try:
        conn.request("POST", "/", body=query.encode(), headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def _table(database: str, prefix: str) -> str:
    """A fresh, quoted database.table name (quoting as 18.16 parses it)."""
    return f"{quote_identifier(database)}.{quote_identifier(f'{prefix}_{uuid.uuid4().hex[:8]}')}"


@pytest.mark.parametrize("port", TLS_PORTS, ids=["https", "native"])
def test_tls13_is_negotiated(clickhouse_service, port):
    # Debian's 18.16 links the system OpenSSL 3 through Poco 1.11: TLS 1.3 works.
    assert negotiated_protocol(HOST, port) == "TLSv1.3"


@pytest.mark.parametrize("port", TLS_PORTS, ids=["https", "native"])
def test_tls12_client_is_refused(clickhouse_service, port):
    with pytest.raises(ssl.SSLError):
        negotiated_protocol(HOST, port, maximum=ssl.TLSVersion.TLSv1_2)


@pytest.mark.parametrize("port", PLAINTEXT_PORTS)
def test_no_plaintext_port_listens(clickhouse_service, port):
    assert not port_open(HOST, port), f"something listens in plaintext on {HOST}:{port}"


def test_plain_http_on_the_https_port_is_refused(clickhouse_service):
    assert plaintext_http_refused(HOST, HTTPS_PORT)


def test_plain_native_protocol_on_the_tls_port_is_refused(clickhouse_service):
    with socket.create_connection((HOST, NATIVE_TLS_PORT), timeout=5) as raw:
        raw.sendall(_native_hello())
        try:
            answer = raw.recv(64)
        except ConnectionResetError:
            answer = b""
    # Packet 0 (Hello) or 2 (Exception) would mean the plaintext native protocol was understood.
    assert answer[:1] not in (b"\x00", b"\x02"), answer


def test_status_reports_tls13(clickhouse_service):
    [row] = clickhouse_service.status()
    assert row.running and row.healthy, row
    assert row.tls == "TLSv1.3"
    assert row.version == "18.16.1"


def test_default_user_cannot_log_in(clickhouse_service):
    # No credentials at all: ClickHouse falls back to the user `default`, which does not exist.
    status, body = _https_post("SELECT 1", {})
    assert status != 200 and "Unknown user default" in body, (status, body)
    # `default` named explicitly with an empty password: the same.
    token = base64.b64encode(b"default:").decode()
    status, body = _https_post("SELECT 1", {"Authorization": f"Basic {token}"})
    assert status != 200 and "Unknown user default" in body, (status, body)
    with pytest.raises(DatabaseError):
        clickhouse_connect.get_client(
            host=HOST,
            port=HTTPS_PORT,
            secure=True,
            verify=True,
            ca_cert=str(ensure_certificates().ca_cert),
            username="default",
            password="",
            compress=False,
        )


def test_wrong_password_is_refused(clickhouse_service, creds):
    user = creds("clickhouse", "pipeline")
    token = base64.b64encode(f"{user.username}:not-the-password".encode()).decode()
    status, body = _https_post("SELECT 1", {"Authorization": f"Basic {token}"})
    assert status != 200 and "Wrong password" in body, (status, body)


def test_pipeline_creates_tables_in_cdc_only(clickhouse_service):
    # Table names are generated and quoted here; S608 sees SQL built from strings, not input.
    table = _table("cdc", "pipeline_owned")
    client = connect("pipeline")
    try:
        assert client.command("SELECT currentDatabase()") == "cdc"
        client.command(f"CREATE TABLE {table} (id UInt64, v String) ENGINE = MergeTree ORDER BY id")
        client.insert(  # 1.6.0 cannot describe an 18.16 table: it needs the type names
            table,
            [[1, "x"], [2, "y"]],
            column_names=["id", "v"],
            column_type_names=["UInt64", "String"],
        )
        assert client.command(f"SELECT count() FROM {table}") == 2  # noqa: S608
        with pytest.raises(DatabaseError, match="Access denied to database default"):
            client.command(
                f"CREATE TABLE {_table('default', 'nope')} (id UInt64) "
                "ENGINE = MergeTree ORDER BY id"
            )
        with pytest.raises(DatabaseError, match="Access denied"):
            client.command(f"CREATE DATABASE {quote_identifier('nope_' + uuid.uuid4().hex[:8])}")
    finally:
        client.command(f"DROP TABLE IF EXISTS {table}")
        client.close()


def test_pipeline_cannot_read_admin_tables_elsewhere(clickhouse_service):
    table = _table("default", "admin_only")
    admin = connect("admin")
    admin.command(f"CREATE TABLE {table} (secret String) ENGINE = MergeTree ORDER BY secret")
    try:
        admin.insert(table, [["admin's"]], column_names=["secret"], column_type_names=["String"])
        pipeline = connect("pipeline")
        try:
            with pytest.raises(DatabaseError, match="Access denied to database default"):
                pipeline.query(f"SELECT * FROM {table}")  # noqa: S608
        finally:
            pipeline.close()
    finally:
        admin.command(f"DROP TABLE IF EXISTS {table}")
        admin.close()
