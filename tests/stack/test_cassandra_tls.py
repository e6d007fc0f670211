"""Every Cassandra node speaks CQL over TLS 1.3 only: no plaintext, no TLS 1.2."""

from __future__ import annotations

import socket
import ssl

import pytest
from cassandra import AuthenticationFailed
from cassandra.cluster import Cluster, NoHostAvailable

from devstack.cassandra import connect
from devstack.tlsprobe import negotiated_protocol

# A CQL v4 OPTIONS request: a plaintext server answers SUPPORTED, a frame starting 0x84.
OPTIONS_FRAME = bytes([0x04, 0x00, 0x00, 0x00, 0x05]) + (0).to_bytes(4, "big")


@pytest.fixture(params=[7, 8], ids=["c7", "c8"])
def cluster(request, cassandra_clusters):
    return cassandra_clusters[request.param]


def test_plaintext_cql_gets_no_answer(cluster):
    for ip in cluster.contact_points:
        with socket.create_connection((ip, cluster.port), timeout=5) as raw:
            raw.sendall(OPTIONS_FRAME)
            try:
                answer = raw.recv(64)
            except (ConnectionResetError, TimeoutError):
                answer = b""
        assert not answer.startswith(b"\x84"), f"{ip} answered CQL in plaintext: {answer!r}"


def test_plaintext_driver_cannot_connect(cluster):
    # No credentials on purpose: a server speaking plaintext would get as far as asking for
    # them (the driver then reports AuthenticationFailed); a TLS-only one never gets there.
    plain = Cluster(cluster.contact_points, port=cluster.port, protocol_version=5,
                    connect_timeout=5)
    try:
        with pytest.raises(NoHostAvailable) as refused:
            plain.connect()
    finally:
        plain.shutdown()
    reasons = list(refused.value.errors.values())
    assert reasons and not any(isinstance(r, AuthenticationFailed) for r in reasons), reasons


def test_tls12_client_is_refused(cluster):
    for ip in cluster.contact_points:
        with pytest.raises(ssl.SSLError):
            negotiated_protocol(ip, cluster.port, maximum=ssl.TLSVersion.TLSv1_2)


def test_tls13_handshake_and_pipeline_login(cluster, creds):
    for ip in cluster.contact_points:
        assert negotiated_protocol(ip, cluster.port) == "TLSv1.3"
    password = creds("cassandra", "pipeline").password
    driver, sess = connect(cluster.version, "pipeline", password=password, metadata=False)
    try:
        row = sess.execute("SELECT release_version FROM system.local").one()
        assert row.release_version == "5.0.9"
    finally:
        driver.shutdown()
