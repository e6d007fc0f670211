"""The pipeline's own connection to Cassandra: TLS 1.3 verified against a CA, password auth."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path

from cassandra import ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.query import tuple_factory


def tls_context(ca_cert: Path) -> ssl.SSLContext:
    """TLS 1.3 only; the node's certificate must name the address the driver connects to."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca_cert)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = True
    return context


def open_session(contact_points: Sequence[str], *, port: int, username: str, password: str,
                 ca_cert: Path, consistency: str = "LOCAL_QUORUM",
                 request_timeout: float = 30.0) -> tuple[Cluster, Session]:
    """A connected session; the caller shuts the Cluster down."""
    cluster = Cluster(
        list(contact_points),
        port=port,
        protocol_version=5,
        ssl_context=tls_context(ca_cert),
        auth_provider=PlainTextAuthProvider(username, password),
        execution_profiles={EXEC_PROFILE_DEFAULT: ExecutionProfile(
            consistency_level=ConsistencyLevel.name_to_value[consistency],
            request_timeout=request_timeout)},
        connect_timeout=10,
    )
    try:
        return cluster, cluster.connect()
    except Exception:
        cluster.shutdown()
        raise


def tuple_rows(session: Session) -> ExecutionProfile:
    """The session's default profile, with rows as plain tuples: for the hot reads (row images,
    the initial load), which index their rows. The default, named tuples, makes a namedtuple
    class per response: 4% of the pipeline's CPU in its benchmark."""
    return session.execution_profile_clone_update(EXEC_PROFILE_DEFAULT, row_factory=tuple_factory)
