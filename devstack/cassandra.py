"""Apache Cassandra 5.0.9 from Maven Central jars on Java 17: two local clusters on loopback.

Cluster "c7" writes commit-log version 7 (storage_compatibility_mode CASSANDRA_4, 127.0.0.x),
cluster "c8" writes version 8 (mode NONE, 127.0.1.x); each runs 1 node, or 3 for replica tests.
Clients speak TLS 1.3 only and log in with a password: cdc_admin (superuser) or cdc_pipeline;
the default superuser `cassandra` is disabled on first start.

A cluster keeps the node count it was created with: starting it with another count fails and
names the commands that reset it (see cassandra_config.claim_size).

What it took to run on Java 17 (each detailed where it is set, in cassandra_config.py): the
--add-exports/--add-opens of 5.0's jvm17-server.options; authenticator, authorizer and
role_manager as class_name maps; crypto_provider with fail_on_missing_provider false; the PEM
SSL factory given a truststore; the default ring delay kept (a short one broke schema agreement).
"""

from __future__ import annotations

import logging
import secrets
import shutil
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from cassandra import AuthenticationFailed, ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    Session,
)
from cassandra.policies import (
    DCAwareRoundRobinPolicy,
    TokenAwarePolicy,
    WhiteListRoundRobinPolicy,
)
from cassandra.query import SimpleStatement

from devstack import credentials, process
from devstack.cassandra_config import (
    CASSANDRA_VERSION,
    CLUSTERS,
    DATACENTER,
    MAX_NODES,
    NATIVE_PORT,
    REPLICAS,
    CassandraSettings,
    ClusterInfo,
    ClusterSpec,
    NodeSpec,
    claim_size,
    cluster_info,
    cluster_spec,
    configured_nodes,
    current_nodes,
    java_command,
    node_specs,
    render_pom,
    write_node_files,
)
from devstack.certs import ensure_certificates
from devstack.paths import cache_dir
from devstack.process import StackError
from devstack.service import ServiceStatus
from devstack.tlsprobe import negotiated_protocol

__all__ = ["CLUSTERS", "REPLICAS", "CassandraService", "CassandraSettings", "ClusterInfo",
           "cluster_info", "configured_nodes", "connect", "install", "session", "ssl_context"]

log = logging.getLogger(__name__)

START_TIMEOUT = 300.0  # seconds per node; 6 fresh nodes booting on 2 cores took ~130 s
USERS = {"admin": "cdc_admin", "pipeline": "cdc_pipeline"}


def install() -> Path:
    """Fetch cassandra-all and its runtime dependencies once; returns the lib folder.

    Maven copies into lib.partial, renamed to lib when complete; lib.complete, written last,
    is what later calls trust (an interrupted fetch simply runs again).
    """
    base = cache_dir() / f"cassandra-{CASSANDRA_VERSION}"
    lib, marker = base / "lib", base / "lib.complete"
    if marker.exists() and lib.is_dir():
        return lib
    base.mkdir(parents=True, exist_ok=True)
    (base / "pom.xml").write_text(render_pom())
    partial = base / "lib.partial"
    shutil.rmtree(partial, ignore_errors=True)
    process.run(
        ["mvn", "-q", "-B", "-f", base / "pom.xml", "dependency:copy-dependencies",
         "-DincludeScope=runtime", f"-DoutputDirectory={partial}"],
        what=f"fetching Cassandra {CASSANDRA_VERSION} jars from Maven Central",
    )
    jars = sorted(p.name for p in partial.glob("*.jar"))
    if f"cassandra-all-{CASSANDRA_VERSION}.jar" not in jars:
        raise StackError(f"Maven finished but {partial} holds no cassandra-all jar")
    shutil.rmtree(lib, ignore_errors=True)
    partial.rename(lib)
    marker.write_text("\n".join(jars) + "\n")
    return lib


# --- clients ------------------------------------------------------------------------------------

def ssl_context() -> ssl.SSLContext:
    """TLS 1.3 only; verifies the node's certificate against its IP (the driver passes the IP)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ensure_certificates().ca_cert)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = True
    return context


def _open(hosts: list[str], username: str, password: str, *, only: str | None = None,
          keyspace: str | None = None, metadata: bool = True) -> tuple[Cluster, Session]:
    if only:
        policy = WhiteListRoundRobinPolicy([only])
    else:
        policy = TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=DATACENTER))
    cluster = Cluster(
        hosts,
        port=NATIVE_PORT,
        protocol_version=5,  # what 5.0 speaks: spares the driver a downgrade and its warnings
        ssl_context=ssl_context(),
        auth_provider=PlainTextAuthProvider(username, password),
        execution_profiles={
            EXEC_PROFILE_DEFAULT: ExecutionProfile(load_balancing_policy=policy,
                                                   request_timeout=30),
        },
        schema_metadata_enabled=metadata,
        token_metadata_enabled=metadata,
        connect_timeout=10,
    )
    try:
        return cluster, cluster.connect(keyspace)
    except Exception:
        cluster.shutdown()
        raise


def connect(version: int = 7, user: str = "admin", *, password: str | None = None,
            keyspace: str | None = None, metadata: bool = True) -> tuple[Cluster, Session]:
    """A TLS 1.3 session to the cluster writing commit-log VERSION, as "admin" or "pipeline".

    PASSWORD: give the one read from OpenBao (tests and the pipeline do); None reads the
    stack's own credentials file, which only the stack itself should do.
    METADATA False skips the driver's schema and token metadata: quicker for one-off queries.
    The caller shuts the returned Cluster down (`session()` does it for a with-block).
    """
    if user not in USERS:
        raise ValueError(f"user is one of {sorted(USERS)}, not {user!r}")
    if password is None:
        password = credentials.load()[f"cassandra_{user}_password"]
    return _open(cluster_info(version).contact_points, USERS[user], password,
                 keyspace=keyspace, metadata=metadata)


@contextmanager
def session(version: int = 7, user: str = "admin", **kwargs) -> Iterator[Session]:
    """`with session(8) as s:` - connect(), shut down on exit."""
    cluster, sess = connect(version, user, **kwargs)
    try:
        yield sess
    finally:
        cluster.shutdown()


@contextmanager
def _quiet_driver() -> Iterator[None]:
    """Mute the driver's logged tracebacks and warnings where they are expected (see callers)."""
    log = logging.getLogger("cassandra")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def _auth_failed(error: Exception) -> bool:
    if isinstance(error, AuthenticationFailed):
        return True
    return isinstance(error, NoHostAvailable) and any(
        isinstance(e, AuthenticationFailed) for e in error.errors.values())


def _can_log_in(hosts: list[str], username: str, password: str) -> bool:
    try:
        with _quiet_driver():  # a refused login is an answer here, not an error
            cluster, _ = _open(hosts, username, password, metadata=False)
    except Exception as error:
        if _auth_failed(error):
            return False
        raise
    cluster.shutdown()
    return True


# --- roles --------------------------------------------------------------------------------------

def _admin_session(nodes: list[NodeSpec]) -> tuple[Cluster, Session]:
    """Log in as cdc_admin, creating it first, as the default superuser, on a fresh cluster.

    Just after start-up the default superuser may not exist yet, and with 3 nodes its QUORUM
    read may miss peers: both look like a refused login, so this retries until the timeout.
    """
    hosts = [n.ip for n in nodes]
    password = credentials.load()["cassandra_admin_password"]
    opened: list[tuple[Cluster, Session]] = []

    def attempt() -> bool:
        if _can_log_in(hosts, "cdc_admin", password):
            opened.append(_open(hosts, "cdc_admin", password, metadata=False))
            return True
        with _quiet_driver():
            cluster, default = _open(hosts, "cassandra", "cassandra", metadata=False)
        try:
            _replicate_auth(default, len(nodes))  # first, so the new role lands on every node
            default.execute("CREATE ROLE IF NOT EXISTS cdc_admin WITH SUPERUSER = true "
                            "AND LOGIN = true AND PASSWORD = %s", (password,))
        finally:
            cluster.shutdown()
        return False  # the next attempt logs in as cdc_admin

    process.wait_until(
        attempt, timeout=120, log_path=nodes[0].system_log,
        what=f"logging in to Cassandra {nodes[0].cluster.name} as cdc_admin, or creating it as "
             "the default superuser (if both stay refused, the stack's credentials file no "
             "longer matches the cluster's data: reset the cluster)",
    )
    return opened[0]


def _replicate_auth(sess: Session, nodes: int) -> None:
    """With 3 nodes, keep every role on every node, so logins survive a node being down."""
    if nodes == 1:
        return
    wanted = {"class": "org.apache.cassandra.locator.NetworkTopologyStrategy",
              DATACENTER: str(nodes)}
    row = sess.execute("SELECT replication FROM system_schema.keyspaces "
                       "WHERE keyspace_name = 'system_auth'").one()
    if dict(row.replication) != wanted:
        # Done before any role but the default one exists, so the server's advice to run a
        # full repair (a driver warning) has nothing to repair.
        with _quiet_driver():
            sess.execute("ALTER KEYSPACE system_auth WITH replication = "
                         f"{{'class': 'NetworkTopologyStrategy', '{DATACENTER}': {nodes}}}")


def _ensure_roles(sess: Session, nodes: list[NodeSpec]) -> None:
    """Idempotent: system_auth replication, the default superuser disabled, cdc_pipeline there.

    cdc_pipeline reads system_schema without a grant (5.0 lets every login read it); SELECT on
    captured keyspaces is granted by whoever creates them.
    """
    _replicate_auth(sess, len(nodes))
    default = sess.execute("SELECT can_login, is_superuser FROM system_auth.roles "
                           "WHERE role = 'cassandra'").one()
    if default is not None and (default.can_login or default.is_superuser):
        # Defused rather than dropped, so LIST ROLES shows the well-known login is off.
        sess.execute("ALTER ROLE cassandra WITH PASSWORD = %s AND SUPERUSER = false "
                     "AND LOGIN = false", (secrets.token_urlsafe(32),))
    password = credentials.load()["cassandra_pipeline_password"]
    if sess.execute("SELECT role FROM system_auth.roles WHERE role = 'cdc_pipeline'").one() is None:
        sess.execute("CREATE ROLE IF NOT EXISTS cdc_pipeline WITH LOGIN = true AND PASSWORD = %s",
                     (password,))
    elif not _can_log_in([n.ip for n in nodes], "cdc_pipeline", password):
        # The credentials file was regenerated. Not done unconditionally: 5.0.9 refuses a
        # second password change of a role within 5 s, e.g. right after the CREATE.
        sess.execute("ALTER ROLE cdc_pipeline WITH LOGIN = true AND PASSWORD = %s", (password,))


def _ensure_expiry_schedule(sess: Session, nodes: int) -> None:
    """Idempotent: the TTL expiry schedule (connectors/cassandra/expiry.py) and cdc_pipeline's
    SELECT and MODIFY on its keyspace, what an operator runs once in production."""
    from connectors.cassandra.expiry import ExpirySettings, schema_statements

    replication = f"{{'class': 'NetworkTopologyStrategy', '{DATACENTER}': {min(nodes, 3)}}}"
    with _quiet_driver():
        for statement in schema_statements(ExpirySettings().keyspace, replication,
                                           USERS["pipeline"]):
            sess.execute(statement, timeout=60)


def _cluster_settled(sess: Session, nodes: list[NodeSpec]) -> None:
    """Wait until every node sees every peer UP and all agree on the schema.

    UP: each node, as coordinator, reads at ALL from system_auth (RF 3), which it refuses at
    once while it thinks a replica is down. Schema: one version in every node's system.local.
    """
    at_all = SimpleStatement("SELECT role FROM system_auth.roles WHERE role = 'cdc_admin'",
                             consistency_level=ConsistencyLevel.ALL)

    def check() -> bool:
        hosts = {h.address: h for h in sess.cluster.metadata.all_hosts()}
        targets = [hosts[n.ip] for n in nodes if n.ip in hosts]
        if len(targets) < len(nodes):
            return False
        if any(sess.execute(at_all, host=h).one() is None for h in targets):
            return False
        versions = {sess.execute("SELECT schema_version FROM system.local", host=h).one()
                    .schema_version for h in targets}
        return len(versions) == 1

    process.wait_until(check, timeout=START_TIMEOUT, log_path=nodes[0].system_log,
                       what=f"Cassandra {nodes[0].cluster.name}: every node seeing its peers UP "
                            "and agreeing on the schema")


# --- the service --------------------------------------------------------------------------------

class CassandraService:
    """The Cassandra clusters of the stack, one per commit-log version asked for."""

    name = "cassandra"

    def __init__(self, versions: tuple[int, ...] = (7, 8), nodes: int = 1,
                 settings: CassandraSettings | None = None, *,
                 clusters: tuple[ClusterSpec, ...] | None = None) -> None:
        if nodes not in (1, MAX_NODES):
            raise ValueError(f"a cluster runs 1 or {MAX_NODES} nodes, not {nodes}")
        self.clusters = list(clusters) if clusters else [cluster_spec(v) for v in versions]
        self.nodes = nodes
        self.settings = settings or CassandraSettings()

    def install(self) -> None:
        install()

    def start(self) -> None:
        lib = install()
        certs = ensure_certificates()
        refused = []
        for cluster in self.clusters:
            try:
                claim_size(cluster, self.nodes)
            except StackError as error:
                refused.append(str(error))
        if refused:  # name every cluster to reset at once, not one per attempt
            raise StackError("\n".join(refused))
        every = [n for c in self.clusters for n in node_specs(c, self.nodes)]
        # Every node of every cluster boots at once (each is a seed with fixed tokens): on
        # 2 cores that is quicker than one after another.
        for node in every:
            if process.tracked(node.name) is None:
                process.refuse_taken_port(node.ip, NATIVE_PORT)
                write_node_files(node, certs, self.settings)
                process.start(node.name, java_command(node, lib), log_path=node.output_log)
        began = time.monotonic()
        for node in every:
            process.wait_until(
                lambda n=node: negotiated_protocol(n.ip, NATIVE_PORT) == "TLSv1.3",
                timeout=START_TIMEOUT, what=f"{node.name} accepting TLS on {node.ip}:{NATIVE_PORT}",
                log_path=node.output_log, process=node.name,
            )
        log.info("%d Cassandra node(s) accept TLS after %.1f s",
                 len(every), time.monotonic() - began)
        for cluster in self.clusters:
            nodes = node_specs(cluster, self.nodes)
            admin, sess = _admin_session(nodes)
            log.info("%s: logged in as cdc_admin after %.1f s",
                     cluster.name, time.monotonic() - began)
            try:
                _ensure_roles(sess, nodes)
                _ensure_expiry_schedule(sess, len(nodes))
                if len(nodes) > 1:
                    _cluster_settled(sess, nodes)
            finally:
                admin.shutdown()
            log.info("%s: ready after %.1f s", cluster.name, time.monotonic() - began)

    def stop(self) -> None:
        # Every node slot, whatever count the cluster runs, and the replica tests' cluster if it
        # runs (nothing else stops it); SIGTERM lets each node drain.
        clusters = self.clusters + [c for c in (REPLICAS,) if c not in self.clusters]
        names = [n.name for c in clusters for n in node_specs(c, MAX_NODES)]
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            list(pool.map(process.stop, names))

    def status(self) -> list[ServiceStatus]:
        rows = []
        replicas_running = any(process.tracked(n.name) is not None
                               for n in node_specs(REPLICAS, MAX_NODES))
        for cluster in self.clusters + ([REPLICAS] if replicas_running else []):
            configured = configured_nodes(cluster) or self.nodes
            for node in node_specs(cluster, MAX_NODES):
                running = process.tracked(node.name) is not None
                if running or node.index <= configured:
                    rows.append(_node_status(node, running))
        return rows

    def log_paths(self) -> list[Path]:
        return [path for c in self.clusters for n in current_nodes(c)
                for path in (n.system_log, n.output_log)]


def _node_status(node: NodeSpec, running: bool) -> ServiceStatus:
    """From real connections: a TLS handshake of its own, then a CQL query as cdc_admin."""
    cdc_raw = node.folder("cdc_raw")
    fields = dict(name=node.name, address=f"{node.ip}:{NATIVE_PORT}",
                  detail=f"commitlog v{node.cluster.commitlog_version}, cdc_raw {cdc_raw}")
    if not running:
        return ServiceStatus(running=False, healthy=False, **fields)
    tls, version = "-", "-"
    try:
        tls = negotiated_protocol(node.ip, NATIVE_PORT)
        password = credentials.load()["cassandra_admin_password"]
        cluster, sess = _open([node.ip], "cdc_admin", password, only=node.ip, metadata=False)
        try:
            version = sess.execute("SELECT release_version FROM system.local").one().release_version
        finally:
            cluster.shutdown()
    except Exception as error:  # noqa: BLE001 - status reports what is wrong, it does not raise
        fields["detail"] += f"; {type(error).__name__}: {str(error)[:120]}"
    return ServiceStatus(running=True, healthy=version != "-" and tls == "TLSv1.3",
                         version=version, tls=tls, **fields)
