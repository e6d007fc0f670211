"""What the local Cassandra clusters are made of: addresses, folders, node counts, and the files
and command line each node runs with. Data and rendering only; devstack/cassandra.py runs them.

Everything here was proven with Cassandra 5.0.9 jars from Maven Central on Debian's OpenJDK 17
(2 cores); the comments say what each setting needed and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from devstack.certs import Certificates
from devstack.paths import service_dir
from devstack.process import StackError

CASSANDRA_VERSION = "5.0.9"
JAVA = "/usr/bin/java"  # OpenJDK 17: a Java 5.0 supports (the machine's Temurin 25 is not)
NATIVE_PORT = 9042
STORAGE_PORT = 7000
JMX_BASE_PORT = 7199
HEAP = "768m"
DATACENTER = "datacenter1"  # what SimpleSnitch reports for every node
MAX_NODES = 3


@dataclass(frozen=True)
class ClusterSpec:
    """One of two independent clusters, told apart by the commit-log version they write."""

    name: str
    commitlog_version: int
    storage_compatibility_mode: str
    subnet: str  # its nodes are <subnet>.1, .2, .3
    index: int  # spaces the clusters' JMX ports apart


# 5.0 writes descriptor version 7 while it stays compatible with 4.x, version 8 once it need not.
# A third cluster, always 3 nodes, exists only for the replica tests (RF=3, a node killed): it
# is started by their fixture and stopped by `devstack down`, never by `up`.
REPLICAS = ClusterSpec("r8", 8, "NONE", "127.0.2", 2)
CLUSTERS = {
    7: ClusterSpec("c7", 7, "CASSANDRA_4", "127.0.0", 0),
    8: ClusterSpec("c8", 8, "NONE", "127.0.1", 1),
}


@dataclass(frozen=True)
class CassandraSettings:
    """Knobs a test or a benchmark may turn; the defaults suit tests (small segments, quick CDC).

    They are written into cassandra.yaml at each start of a stopped node.
    """

    tokens_per_node: int = 16  # only read at a cluster's first start
    # The CDC index only moves at commit-log sync: the period is the floor of CDC latency.
    commitlog_sync_period_ms: int = 1000
    # 1 MiB is the smallest size 5.0 accepts (whole MiB, > 0); tests fill a segment in a second.
    # max_mutation_size follows at half of it (5.0 refuses more), 512 KiB by default.
    commitlog_segment_size_mib: int = 1
    cdc_total_space_mib: int = 1024
    cdc_free_space_check_interval_ms: int = 250
    memtable_space_mib: int = 64

    def __post_init__(self) -> None:
        # Cassandra would refuse these too, but only after a JVM start, in a log file.
        if not 1 <= self.commitlog_segment_size_mib < 2048:
            raise ValueError("commitlog_segment_size_mib must be 1..2047 (Cassandra's bounds)")
        for name in ("tokens_per_node", "commitlog_sync_period_ms", "cdc_total_space_mib",
                     "cdc_free_space_check_interval_ms", "memtable_space_mib"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")


@dataclass(frozen=True)
class NodeSpec:
    cluster: ClusterSpec
    index: int  # 1-based
    nodes: int  # the size of its cluster

    @property
    def name(self) -> str:
        """Its name for devstack.process (PID file) and in `devstack status`."""
        return f"cassandra-{self.cluster.name}-node{self.index}"

    @property
    def ip(self) -> str:
        return f"{self.cluster.subnet}.{self.index}"

    @property
    def jmx_port(self) -> int:
        return JMX_BASE_PORT + 10 * self.cluster.index + self.index

    @property
    def home(self) -> Path:
        return cluster_dir(self.cluster) / f"node{self.index}"

    def folder(self, what: str) -> Path:
        """One of FOLDERS."""
        return self.home / what

    @property
    def system_log(self) -> Path:
        return self.folder("logs") / "system.log"

    @property
    def output_log(self) -> Path:
        """The JVM's stdout and stderr: Cassandra's warnings and errors, and the JVM's own."""
        return self.folder("logs") / "output.log"


FOLDERS = ("data", "commitlog", "cdc_raw", "hints", "saved_caches", "logs", "triggers")


@dataclass(frozen=True)
class ClusterInfo:
    """Where a cluster's clients connect and where its nodes write (lists in node order)."""

    version: int
    name: str
    contact_points: list[str]
    port: int
    cdc_raw_dirs: list[Path]
    commitlog_dirs: list[Path]


def cluster_spec(version: int) -> ClusterSpec:
    try:
        return CLUSTERS[version]
    except KeyError:
        raise StackError(f"no Cassandra cluster writes commit-log version {version}; "
                         f"known: {', '.join(map(str, CLUSTERS))}") from None


def cluster_dir(cluster: ClusterSpec) -> Path:
    path = service_dir("cassandra") / cluster.name
    path.mkdir(exist_ok=True)
    return path


def node_specs(cluster: ClusterSpec, nodes: int) -> list[NodeSpec]:
    return [NodeSpec(cluster, i, nodes) for i in range(1, nodes + 1)]


# --- node count: fixed when a cluster is created ------------------------------------------------

def _size_file(cluster: ClusterSpec) -> Path:
    return cluster_dir(cluster) / "cluster.json"


def configured_nodes(cluster: ClusterSpec) -> int | None:
    """The node count the cluster's data was created with; None before its first start."""
    try:
        return int(json.loads(_size_file(cluster).read_text())["nodes"])
    except (OSError, ValueError, KeyError):
        return None


def claim_size(cluster: ClusterSpec, nodes: int) -> None:
    """Record NODES for a new cluster; refuse another count for an existing one.

    Tokens and system_auth replication are set at creation, so resizing would need a real
    bootstrap or decommission; tests want a fresh cluster of the other size instead.
    """
    existing = configured_nodes(cluster)
    if existing is None:
        _size_file(cluster).write_text(json.dumps({"nodes": nodes}) + "\n")
    elif existing != nodes:
        raise StackError(
            f"Cassandra cluster {cluster.name} was created with {existing} node(s), not {nodes}. "
            f"Start it with --nodes {existing}, or reset it (its data is lost): "
            f"python -m devstack down --only cassandra && rm -rf {cluster_dir(cluster)}"
        )


def current_nodes(cluster: ClusterSpec) -> list[NodeSpec]:
    """The cluster's nodes as created (one before its first start)."""
    return node_specs(cluster, configured_nodes(cluster) or 1)


def cluster_info(version: int | ClusterSpec) -> ClusterInfo:
    """The cluster writing commit-log VERSION, or the cluster given (e.g. REPLICAS)."""
    cluster = version if isinstance(version, ClusterSpec) else cluster_spec(version)
    nodes = current_nodes(cluster)
    return ClusterInfo(
        version=cluster.commitlog_version,
        name=nodes[0].cluster.name,
        contact_points=[n.ip for n in nodes],
        port=NATIVE_PORT,
        cdc_raw_dirs=[n.folder("cdc_raw") for n in nodes],
        commitlog_dirs=[n.folder("commitlog") for n in nodes],
    )


# --- files --------------------------------------------------------------------------------------

def render_pom() -> str:
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <!-- Generated by devstack: only here to let Maven fetch Cassandra's jars. -->
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.devstack</groupId><artifactId>cassandra-jars</artifactId><version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId><artifactId>cassandra-all</artifactId>
      <version>{CASSANDRA_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""


def initial_tokens(node: NodeSpec, tokens_per_node: int) -> list[int]:
    """Evenly interleaved Murmur3 tokens, fixed per (cluster size, node).

    Fixed tokens let every node of a fresh cluster start at once: each is a seed that owns its
    ranges without bootstrapping or waiting for the token allocator to see the ring.
    """
    total = node.nodes * tokens_per_node
    step = 2**64 // total
    return [-(2**63) + j * step for j in range(node.index - 1, total, node.nodes)]


def render_yaml(node: NodeSpec, certs: Certificates, settings: CassandraSettings) -> str:
    peers = node_specs(node.cluster, node.nodes)
    tokens = initial_tokens(node, settings.tokens_per_node)
    config = {
        "cluster_name": f"cdc-{node.cluster.name}",
        "num_tokens": settings.tokens_per_node,
        "initial_token": ",".join(map(str, tokens)),
        "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner",
        # Every node is a seed: seeds never bootstrap, so a fresh cluster starts all at once.
        "seed_provider": [{
            "class_name": "org.apache.cassandra.locator.SimpleSeedProvider",
            "parameters": [{"seeds": ",".join(f"{p.ip}:{STORAGE_PORT}" for p in peers)}],
        }],
        "listen_address": node.ip,
        "rpc_address": node.ip,
        "storage_port": STORAGE_PORT,
        "native_transport_port": NATIVE_PORT,
        "start_native_transport": True,
        "endpoint_snitch": "SimpleSnitch",
        "data_file_directories": [str(node.folder("data"))],
        "commitlog_directory": str(node.folder("commitlog")),
        "cdc_raw_directory": str(node.folder("cdc_raw")),
        "hints_directory": str(node.folder("hints")),
        "saved_caches_directory": str(node.folder("saved_caches")),
        "storage_compatibility_mode": node.cluster.storage_compatibility_mode,
        # CDC: each segment is hard-linked into cdc_raw, its _cdc.idx rewritten at every sync.
        "cdc_enabled": True,
        "cdc_block_writes": True,  # when cdc_raw is full, refuse writes rather than drop changes
        "cdc_total_space": f"{settings.cdc_total_space_mib}MiB",
        "cdc_free_space_check_interval": f"{settings.cdc_free_space_check_interval_ms}ms",
        "commitlog_sync": "periodic",
        "commitlog_sync_period": f"{settings.commitlog_sync_period_ms}ms",
        "commitlog_segment_size": f"{settings.commitlog_segment_size_mib}MiB",
        "max_mutation_size": f"{settings.commitlog_segment_size_mib * 1024 // 2}KiB",
        "commitlog_total_space": "256MiB",  # flush memtables early rather than fill the disk
        "memtable_heap_space": f"{settings.memtable_space_mib}MiB",
        "memtable_offheap_space": f"{settings.memtable_space_mib}MiB",
        "auto_snapshot": False,  # a dropped test keyspace must not stay on disk as a snapshot
        # 5.0 reads these three as a class_name map (a plain class name is 4.x's form).
        "authenticator": {"class_name": "org.apache.cassandra.auth.PasswordAuthenticator"},
        "authorizer": {"class_name": "org.apache.cassandra.auth.CassandraAuthorizer"},
        "role_manager": {"class_name": "org.apache.cassandra.auth.CassandraRoleManager"},
        "client_encryption_options": client_encryption(certs),
        # 5.0's default provider installs Amazon Corretto Crypto Provider, which cassandra-all
        # only declares `provided`: with fail_on_missing_provider false the node logs one
        # warning and uses the JDK's providers instead of refusing to start.
        "crypto_provider": [{
            "class_name": "org.apache.cassandra.security.DefaultCryptoProvider",
            "parameters": [{"fail_on_missing_provider": "false"}],
        }],
    }
    # JSON is YAML (flow style) and Cassandra's SnakeYAML reads it: no YAML library needed.
    return (f"# Generated by devstack for {node.name}; rewritten at each start.\n"
            + json.dumps(config, indent=2) + "\n")


def client_encryption(certs: Certificates) -> dict:
    """TLS 1.3 only, no plaintext fallback, the PEM files as they are (no keytool stores).

    The PEM factory reads `keystore` as one PEM file holding the private key and its
    certificate (certs.server_bundle), needs no password for an unencrypted key, and refuses to
    start without a truststore even though clients send no certificate.
    """
    return {
        "enabled": True,
        "optional": False,
        "ssl_context_factory": {
            "class_name": "org.apache.cassandra.security.PEMBasedSslContextFactory",
        },
        "keystore": str(certs.server_bundle),
        "truststore": str(certs.ca_cert),
        "require_client_auth": False,
        "protocol": "TLS",
        "accepted_protocols": ["TLSv1.3"],
    }


LOGBACK = """<?xml version="1.0"?>
<!-- Generated by devstack. system.log at INFO (5.0's stock debug.log costs CPU that 2-core
     machines lack); warnings and errors also go to stdout, i.e. logs/output.log. -->
<configuration>
  <appender name="SYSTEMLOG" class="ch.qos.logback.core.rolling.RollingFileAppender">
    <file>${cassandra.logdir}/system.log</file>
    <rollingPolicy class="ch.qos.logback.core.rolling.SizeAndTimeBasedRollingPolicy">
      <fileNamePattern>${cassandra.logdir}/system.log.%d{yyyy-MM-dd}.%i.zip</fileNamePattern>
      <maxFileSize>20MB</maxFileSize>
      <maxHistory>3</maxHistory>
      <totalSizeCap>200MB</totalSizeCap>
    </rollingPolicy>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <filter class="ch.qos.logback.classic.filter.ThresholdFilter"><level>WARN</level></filter>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO">
    <appender-ref ref="SYSTEMLOG"/>
    <appender-ref ref="STDOUT"/>
  </root>
</configuration>
"""

# 5.0's conf/jvm17-server.options: what cassandra-all reaches into on Java 17.
JAVA17_FLAGS = [
    *(f"--add-exports={module}=ALL-UNNAMED" for module in (
        "java.base/jdk.internal.misc",
        "java.management.rmi/com.sun.jmx.remote.internal.rmi",
        "java.management/com.sun.jmx.remote.security",
        "java.rmi/sun.rmi.registry",
        "java.rmi/sun.rmi.server",
        "java.sql/java.sql",
        "java.base/java.lang.ref",
        "jdk.unsupported/sun.misc",
    )),
    *(f"--add-opens=java.base/{package}=ALL-UNNAMED" for package in (
        "java.lang.module", "jdk.internal.loader", "jdk.internal.ref", "jdk.internal.reflect",
        "jdk.internal.math", "jdk.internal.module", "jdk.internal.util.jar", "sun.nio.ch",
        "java.io", "java.lang.reflect", "java.lang", "java.util", "java.nio",
    )),
    "--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "-Djdk.attach.allowAttachSelf=true",
    "-Dio.netty.tryReflectionSetAccessible=true",
]


def java_command(node: NodeSpec, lib_dir: Path) -> list[str]:
    logs = node.folder("logs")
    return [
        JAVA,
        f"-Xms{HEAP}", f"-Xmx{HEAP}", "-Xss256k",
        "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=300",
        # A node out of heap exits (and shows as stopped) instead of limping on half-broken.
        "-XX:+ExitOnOutOfMemoryError",
        "-XX:+PerfDisableSharedMem",  # no hsperfdata file per JVM
        "-ea",  # 5.0 ships with assertions on; keep its behaviour
        *JAVA17_FLAGS,
        "-Djava.net.preferIPv4Stack=true",
        "-Dchronicle.analytics.disable=true",
        f"-Dcassandra.config=file://{node.home / 'cassandra.yaml'}",
        f"-Dlogback.configurationFile=file://{node.home / 'logback.xml'}",
        f"-Dcassandra.logdir={logs}",
        f"-Dcassandra.storagedir={node.home}",
        f"-Dcassandra.triggers_dir={node.folder('triggers')}",  # else a warning at each DDL
        "-Dcassandra-foreground=yes",
        # JMX on 127.0.0.1 only (5.0 starts it itself when this is set), one port per node.
        f"-Dcassandra.jmx.local.port={node.jmx_port}",
        # Test-sized start-up: no 5 s+ wait for gossip to settle, and the default superuser
        # created at once instead of after 10 s. The ring delay keeps its 30 s default: it
        # costs a seed with fixed tokens nothing, while with 1 s (fat-client timeout 0.5 s)
        # CPU-starved nodes booting together evicted each other from gossip, after which 5.0's
        # MigrationCoordinator ignored those peers for good and schemas never converged.
        "-Dcassandra.skip_wait_for_gossip_to_settle=0",
        "-Dcassandra.superuser_setup_delay_ms=0",
        "-cp", f"{lib_dir}/*",
        "org.apache.cassandra.service.CassandraDaemon",
    ]


def write_node_files(node: NodeSpec, certs: Certificates, settings: CassandraSettings) -> None:
    for what in FOLDERS:
        node.folder(what).mkdir(parents=True, exist_ok=True)
    (node.home / "cassandra.yaml").write_text(render_yaml(node, certs, settings))
    (node.home / "logback.xml").write_text(LOGBACK)
