"""PostgreSQL 15 (Debian's package): the pipeline's relational sink, TLS 1.3 only, on loopback.

One cluster under the stack home, run as the `postgres` OS user (initdb and postgres refuse root).
TCP accepts only `hostssl` + scram-sha-256 from 127.0.0.1, so a plaintext client finds no
pg_hba.conf entry; the server refuses anything below TLS 1.3. The Unix socket sits in a 0700
folder owned by `postgres` (peer authentication, for `runuser -u postgres -- psql` only).

Privileges, as `start()` sets them (idempotently) - the pipeline gets what it needs and no more:

- role `postgres` (superuser, password postgres_admin_password): the stack's admin; owns the
  database `cdc` and the schema `cdc`, so the pipeline can never alter or drop either.
- role `cdc_pipeline` (LOGIN, NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS):
  - CONNECT on database `cdc`: the only database it can open (PUBLIC loses CONNECT and
    TEMPORARY on `cdc`, `postgres` and `template1`, so no other role gets in by default either).
  - TEMPORARY on database `cdc`: the fast upsert path COPYs into a temp table, then MERGEs it
    into the target (INSERT ... SELECT ... ON CONFLICT where MERGE cannot serve).
  - USAGE, CREATE on schema `cdc`: it creates (and so owns) its own sink tables there; owning
    them is what lets it write, alter and drop them without any table-level grant.
  - search_path = cdc in database `cdc`, so unqualified names land in its schema.
  - nothing on schema `public` of `cdc` (PUBLIC loses CREATE and USAGE there) and no rights on
    tables other roles own: it cannot read what the admin keeps elsewhere.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psycopg
from psycopg import sql

from devstack import credentials, process
from devstack.certs import ensure_certificates
from devstack.paths import service_dir
from devstack.process import StackError, run, start, stop, tracked, wait_until
from devstack.service import ServiceStatus
from devstack.system import apt_install, as_user, chown_to, ensure_traversable

HOST = "127.0.0.1"
PORT = 54329  # not 5432: leaves the port of a Debian-managed cluster alone
PROCESS = "postgres"
BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"
DATABASE = "cdc"
SCHEMA = "cdc"
ROLES = {"admin": "postgres", "pipeline": "cdc_pipeline"}


def folder() -> Path:
    return service_dir("postgres")


def _data() -> Path:
    return folder() / "data"


def _socket_dir() -> Path:
    return folder() / "socket"


def _tls_dir() -> Path:
    return folder() / "tls"


def _log_path() -> Path:
    return folder() / "postgres.log"


def connect(dbname: str = DATABASE, role: str = "admin", **kw) -> psycopg.Connection:
    """A psycopg connection as ROLE ("admin" or "pipeline") over verified TLS (verify-full).

    Keyword arguments override the defaults (e.g. autocommit=True, connect_timeout=2).
    """
    params = {
        "host": HOST,
        "port": PORT,
        "dbname": dbname,
        "user": ROLES[role],
        "password": credentials.load()[f"postgres_{role}_password"],
        "sslmode": "verify-full",
        "sslrootcert": str(ensure_certificates().ca_cert),
        "connect_timeout": 10,
    }
    params.update(kw)
    return psycopg.connect(**params)


def _accepts_logins() -> bool:
    connect("postgres", connect_timeout=2).close()
    return True


def _write_owned(path: Path, text: str, mode: int = 0o600) -> bool:
    """Write TEXT for the server to read; True if the file changed (a reload is due)."""
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    chown_to(path, OS_USER, mode)
    return True


def _conf_quote(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


class PostgresService:
    name = "postgres"

    def install(self) -> None:
        if (BIN / "postgres").exists():
            return
        apt_install(["postgresql-15"], missing=BIN / "postgres")

    def start(self) -> None:
        if not (BIN / "postgres").exists():
            raise StackError(f"{BIN / 'postgres'} is missing: run install() (`devstack up`) first")
        for path in (_data(), _socket_dir(), _tls_dir()):
            path.mkdir(exist_ok=True)
            chown_to(path, OS_USER, 0o700)  # initdb and postgres insist on 0700 for the data
        ensure_traversable(_data(), OS_USER)
        if not (_data() / "PG_VERSION").exists():
            self._initdb()
        changed = self._configure()
        was_running = tracked(PROCESS) is not None
        if not was_running:
            process.refuse_taken_port(HOST, PORT)
            start(PROCESS, as_user(OS_USER, BIN / "postgres", "-D", _data()), log_path=_log_path())
        wait_until(
            _accepts_logins,
            timeout=60,
            what="PostgreSQL accepting TLS logins",
            log_path=_log_path(),
            process=PROCESS,
        )
        with connect("postgres", autocommit=True) as admin:
            if changed and was_running:  # running with older settings or certificate copies
                admin.execute("SELECT pg_reload_conf()")
            self._provision(admin)

    def _initdb(self) -> None:
        pwfile = folder() / "initdb-password"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(credentials.load()["postgres_admin_password"])
        chown_to(pwfile, OS_USER, 0o600)
        try:
            run(
                [
                    "runuser",
                    "-u",
                    OS_USER,
                    "--",
                    BIN / "initdb",
                    "-D",
                    _data(),
                    "-U",
                    "postgres",
                    f"--pwfile={pwfile}",
                    "--auth-local=peer",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ],
                what="initdb",
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _configure(self) -> bool:
        certs = ensure_certificates()
        changed = False
        # The server reads its own copies: the stack's originals are root's, 0600.
        for source, target in (
            (certs.server_cert, "server.crt"),
            (certs.server_key, "server.key"),
            (certs.ca_cert, "ca.crt"),
        ):
            copy = _tls_dir() / target
            if not copy.exists() or copy.read_bytes() != source.read_bytes():
                shutil.copyfile(source, copy)
                changed = True
            chown_to(copy, OS_USER, 0o600)
        settings = {
            "listen_addresses": HOST,
            "port": PORT,
            "unix_socket_directories": _socket_dir(),
            "ssl": "on",
            "ssl_cert_file": _tls_dir() / "server.crt",
            "ssl_key_file": _tls_dir() / "server.key",
            "ssl_ca_file": _tls_dir() / "ca.crt",
            "ssl_min_protocol_version": "TLSv1.3",
            "password_encryption": "scram-sha-256",
        }
        conf = "".join(f"{key} = {_conf_quote(value)}\n" for key, value in settings.items())
        changed |= _write_owned(
            _data() / "devstack.conf", "# written by devstack/postgres.py\n" + conf
        )
        main_conf = _data() / "postgresql.conf"
        if "include 'devstack.conf'" not in main_conf.read_text():
            # Included last, so these win over initdb's defaults; initdb's file stays as it made it.
            with open(main_conf, "a") as out:
                out.write("\ninclude 'devstack.conf'\n")
            changed = True
        hba = (
            "# written by devstack/postgres.py: TLS + SCRAM over TCP, nothing in plaintext\n"
            f"local   all  {ROLES['admin']}  peer\n"
            f"hostssl all  all  {HOST}/32  scram-sha-256\n"
        )
        changed |= _write_owned(_data() / "pg_hba.conf", hba)
        return changed

    def _provision(self, admin: psycopg.Connection) -> None:
        """Roles, database, schema and grants of the module docstring; safe to repeat."""
        pipeline = sql.Identifier(ROLES["pipeline"])
        admin_role = sql.Identifier(ROLES["admin"])
        db = sql.Identifier(DATABASE)
        if (
            admin.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", [ROLES["pipeline"]]
            ).fetchone()
            is None
        ):
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(pipeline))
        # DDL takes no bound parameters, so the password goes in as a literal; libpq hashes it
        # to a SCRAM verifier first, so the plaintext never reaches the server (or its log).
        verifier = admin.pgconn.encrypt_password(
            credentials.load()["postgres_pipeline_password"].encode(),
            ROLES["pipeline"].encode(),
            b"scram-sha-256",
        ).decode()
        admin.execute(
            sql.SQL(
                "ALTER ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
                "PASSWORD {}"
            ).format(pipeline, sql.Literal(verifier))
        )
        if (
            admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone()
            is None
        ):
            admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(db, admin_role))
        for other in ("postgres", "template1"):
            admin.execute(
                sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(
                    sql.Identifier(other)
                )
            )
        admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        admin.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(db, pipeline))
        admin.execute(
            sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path = {}").format(
                pipeline, db, sql.Identifier(SCHEMA)
            )
        )
        with connect(DATABASE, autocommit=True) as cdc:
            schema = sql.Identifier(SCHEMA)
            cdc.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(
                    schema, admin_role
                )
            )
            cdc.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(schema))
            cdc.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(schema, pipeline))
            # PostgreSQL 15 already drops PUBLIC's CREATE on public; USAGE goes too (nothing there
            # is the pipeline's business), and saying it keeps the rule visible here.
            cdc.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")

    def stop(self) -> None:
        # SIGTERM to the process group: backends end their sessions, then the postmaster shuts
        # down cleanly (a crash leaves only postmaster.pid, which postgres itself recovers from).
        stop(PROCESS, timeout=60)

    def status(self) -> list[ServiceStatus]:
        address = f"{HOST}:{PORT}"
        if tracked(PROCESS) is None:
            return [ServiceStatus(self.name, address, running=False, healthy=False)]
        try:
            with connect("postgres", connect_timeout=5) as conn:
                version = conn.execute("SHOW server_version").fetchone()[0]
                tls = conn.execute(
                    "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                ).fetchone()[0]
        except psycopg.Error as error:
            return [
                ServiceStatus(
                    self.name,
                    address,
                    running=True,
                    healthy=False,
                    detail=str(error).strip().splitlines()[0],
                )
            ]
        return [
            ServiceStatus(
                self.name,
                address,
                running=True,
                healthy=tls == "TLSv1.3",
                version=version,
                tls=tls or "-",
                detail=f"data {_data()}",
            )
        ]

    def log_paths(self) -> list[Path]:
        return [_log_path()]
