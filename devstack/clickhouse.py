"""ClickHouse (Debian's clickhouse-server 18.16.1): the pipeline's analytical sink, TLS 1.3 only.

Findings on 18.16.1 that shaped this module (measured on Debian 12, see tests/stack):
- It runs with no plaintext port at all: without <http_port>, <tcp_port> and
  <interserver_http_port> it starts, listening only on https_port and tcp_port_secure (it only
  fails when *no* port is configured). So nothing here listens in plaintext.
- Debian builds it against the system's Poco 1.11 and OpenSSL 3, so it negotiates TLS 1.3, and
  <disableProtocols> accepts tlsv1_2: a TLS 1.2 client gets a protocol_version alert.
- It runs as root without complaint, but it has no reason to: it runs as the `clickhouse` OS
  user (created by the package), owning only its data, log and key folders.
- clickhouse-connect 1.6.0 is the newest client that talks to it (newer ones query
  system.settings.readonly); it needs compress=False (lz4 Content-Encoding is refused).

Users (users.xml; 18.16 has no SQL access control, so this file is the whole policy):
- no `default` user: a client that sends no user name is "Unknown user default", never a
  passwordless login.
- `cdc_admin`: every database, read-write; for the stack's own set-up and for operators.
- `cdc_pipeline`: allow_databases `cdc` only (18.16 always lets every user read `system`),
  readonly 0 because it creates its own sink tables.
Both log in with a SHA-256 password hash and only from 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
from pathlib import Path
from xml.sax.saxutils import escape

import clickhouse_connect
from clickhouse_connect.driver.binding import quote_identifier

from devstack import credentials, process
from devstack.certs import ensure_certificates
from devstack.paths import service_dir
from devstack.process import StackError, port_open, start, stop, tracked, wait_until
from devstack.service import ServiceStatus
from devstack.system import apt_install, as_user, chown_to, ensure_traversable
from devstack.tlsprobe import negotiated_protocol

HOST = "127.0.0.1"
HTTPS_PORT = 8443
NATIVE_TLS_PORT = 9440
PROCESS = "clickhouse"
SERVER = Path("/usr/sbin/clickhouse-server")  # Debian ships no /usr/bin/clickhouse multi-tool
CLIENT = Path("/usr/bin/clickhouse-client")
OS_USER = "clickhouse"
DATABASE = "cdc"
USERS = {"admin": "cdc_admin", "pipeline": "cdc_pipeline"}
# Everything below TLS 1.3, in the names Poco's <disableProtocols> understands.
DISABLED_PROTOCOLS = "sslv2,sslv3,tlsv1,tlsv1_1,tlsv1_2"


def folder() -> Path:
    return service_dir("clickhouse")


def _sub(name: str) -> Path:
    return folder() / name


def _log_path() -> Path:
    return _sub("logs") / "clickhouse-server.log"


def _err_log_path() -> Path:
    return _sub("logs") / "clickhouse-server.err.log"


def _stdout_path() -> Path:
    return _sub("logs") / "stdout.log"


def connect(role: str = "admin", **kw) -> clickhouse_connect.driver.Client:
    """A clickhouse-connect client as ROLE ("admin" or "pipeline") over verified HTTPS.

    The pipeline's client starts in database `cdc` (the only one it may use). Keyword arguments
    override the defaults.
    """
    params = {
        "host": HOST,
        "port": HTTPS_PORT,
        "interface": "https",
        "secure": True,
        "verify": True,
        "ca_cert": str(ensure_certificates().ca_cert),
        "username": USERS[role],
        "password": credentials.load()[f"clickhouse_{role}_password"],
        "database": DATABASE if role == "pipeline" else None,
        "compress": False,  # 18.16 refuses lz4 Content-Encoding
        "connect_timeout": 5,
    }
    params.update(kw)
    return clickhouse_connect.get_client(**params)


def _accepts_logins() -> bool:
    if not port_open(HOST, HTTPS_PORT):  # spares clickhouse-connect's error log while starting
        return False
    connect("admin").close()
    return True


def _sha256(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def _config_xml(tls: Path) -> str:
    p = {name: escape(str(_sub(name))) for name in ("data", "tmp", "user_files", "format_schemas")}
    return f"""<?xml version="1.0"?>
<!-- written by devstack/clickhouse.py; rewritten at every start -->
<yandex>
    <logger>
        <level>information</level>
        <log>{escape(str(_log_path()))}</log>
        <errorlog>{escape(str(_err_log_path()))}</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <listen_host>{HOST}</listen_host>
    <!-- TLS only: no http_port, tcp_port or interserver_http_port (18.16 runs without them). -->
    <https_port>{HTTPS_PORT}</https_port>
    <tcp_port_secure>{NATIVE_TLS_PORT}</tcp_port_secure>
    <openSSL>
        <server>
            <certificateFile>{escape(str(tls / "server.crt"))}</certificateFile>
            <privateKeyFile>{escape(str(tls / "server.key"))}</privateKeyFile>
            <!-- clients authenticate with passwords, not certificates -->
            <verificationMode>none</verificationMode>
            <loadDefaultCAFile>false</loadDefaultCAFile>
            <cacheSessions>true</cacheSessions>
            <disableProtocols>{DISABLED_PROTOCOLS}</disableProtocols>
            <preferServerCiphers>true</preferServerCiphers>
        </server>
        <client>
            <!-- outgoing TLS (remote tables, https dictionaries): trust the stack's CA only;
                 Poco's default handler would ask on a console -->
            <caConfig>{escape(str(tls / "ca.crt"))}</caConfig>
            <loadDefaultCAFile>false</loadDefaultCAFile>
            <verificationMode>strict</verificationMode>
            <disableProtocols>{DISABLED_PROTOCOLS}</disableProtocols>
            <invalidCertificateHandler><name>RejectCertificateHandler</name></invalidCertificateHandler>
        </client>
    </openSSL>
    <max_connections>1024</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <!-- caches allocate on demand; a dev stack shares the machine with Cassandra's JVMs -->
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>{p["data"]}/</path>
    <tmp_path>{p["tmp"]}/</tmp_path>
    <user_files_path>{p["user_files"]}/</user_files_path>
    <format_schema_path>{p["format_schemas"]}/</format_schema_path>
    <users_config>{escape(str(folder() / "users.xml"))}</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <!-- DateTime text conversions in UTC whatever the machine's zone: sinks compare epochs -->
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
</yandex>
"""


def _users_xml() -> str:
    known = credentials.load()

    def user(role: str, profile: str, extra: str = "") -> str:
        digest = _sha256(known[f"clickhouse_{role}_password"])
        return f"""        <{USERS[role]}>
            <password_sha256_hex>{digest}</password_sha256_hex>
            <networks><ip>{HOST}</ip></networks>
            <profile>{profile}</profile>
            <quota>default</quota>{extra}
        </{USERS[role]}>
"""

    allow = f"\n            <allow_databases><database>{DATABASE}</database></allow_databases>"
    return f"""<?xml version="1.0"?>
<!-- written by devstack/clickhouse.py; ClickHouse reloads it by itself when it changes -->
<yandex>
    <profiles>
        <default><readonly>0</readonly></default>
        <!-- its own profile so its limits can change without touching the admin's -->
        <cdc_pipeline><readonly>0</readonly></cdc_pipeline>
    </profiles>
    <users>
        <!-- no <default> user: requests without a user name are refused -->
{user("admin", "default")}{user("pipeline", "cdc_pipeline", allow)}    </users>
    <quotas>
        <default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
            <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
        </interval></default>
    </quotas>
</yandex>
"""


def _write(path: Path, text: str, mode: int) -> bool:
    """Write a file the server reads (root's, group clickhouse); True if it changed."""
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.chown(tmp, 0, pwd.getpwnam(OS_USER).pw_gid)
    os.chmod(tmp, mode)
    os.replace(tmp, path)  # ClickHouse may re-read users.xml at any moment: never half a file
    return True


class ClickHouseService:
    name = "clickhouse"

    def install(self) -> None:
        if SERVER.exists() and CLIENT.exists():
            return
        apt_install(["clickhouse-server", "clickhouse-client"], missing=SERVER)

    def start(self) -> None:
        if not SERVER.exists():
            raise StackError(f"{SERVER} is missing: run install() (`devstack up`) first")
        certs = ensure_certificates()
        for name in ("data", "tmp", "user_files", "format_schemas", "logs", "tls"):
            _sub(name).mkdir(exist_ok=True)
            chown_to(_sub(name), OS_USER, 0o700)
        ensure_traversable(_sub("data"), OS_USER)
        tls_changed = False
        for source, target in (
            (certs.server_cert, "server.crt"),
            (certs.server_key, "server.key"),
            (certs.ca_cert, "ca.crt"),
        ):
            copy = _sub("tls") / target
            if not copy.exists() or copy.read_bytes() != source.read_bytes():
                shutil.copyfile(source, copy)
                tls_changed = True
            chown_to(copy, OS_USER, 0o600)
        config_changed = _write(folder() / "config.xml", _config_xml(_sub("tls")), 0o640)
        _write(folder() / "users.xml", _users_xml(), 0o640)  # hot-reloaded by the server
        if tracked(PROCESS) is not None and (config_changed or tls_changed):
            # Ports and certificates are read at start only; a restart takes well under a second.
            stop(PROCESS, timeout=30)
        if tracked(PROCESS) is None:
            for port in (HTTPS_PORT, NATIVE_TLS_PORT):
                process.refuse_taken_port(HOST, port)
            start(
                PROCESS,
                as_user(OS_USER, SERVER, f"--config-file={folder() / 'config.xml'}"),
                log_path=_stdout_path(),
                cwd=_sub("data"),
            )
        wait_until(
            _accepts_logins,
            timeout=60,
            what="ClickHouse accepting HTTPS logins",
            log_path=_err_log_path(),
            process=PROCESS,
        )
        with connect("admin") as admin:
            admin.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(DATABASE)}")

    def stop(self) -> None:
        # SIGTERM: ClickHouse finishes its queries and shuts storages down; nothing of a crash
        # needs clearing (it keeps no lock file that outlives the process).
        stop(PROCESS, timeout=60)

    def status(self) -> list[ServiceStatus]:
        address = f"{HOST}:{HTTPS_PORT} (https), {HOST}:{NATIVE_TLS_PORT} (native TLS)"
        if tracked(PROCESS) is None:
            return [ServiceStatus(self.name, address, running=False, healthy=False)]
        try:
            tls = negotiated_protocol(HOST, HTTPS_PORT)
            native_tls = negotiated_protocol(HOST, NATIVE_TLS_PORT)
            with connect("admin") as client:
                version = client.command("SELECT version()")
        except Exception as error:  # noqa: BLE001 - any failure is "unhealthy", with its reason
            detail = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            return [ServiceStatus(self.name, address, running=True, healthy=False, detail=detail)]
        healthy = tls == native_tls == "TLSv1.3"
        return [
            ServiceStatus(
                self.name,
                address,
                running=True,
                healthy=healthy,
                version=str(version),
                tls=tls,
                detail=f"native TLS: {native_tls}",
            )
        ]

    def log_paths(self) -> list[Path]:
        return [_log_path(), _err_log_path(), _stdout_path()]
