"""A local certificate authority and one server certificate for every service of the stack.

Generated with the openssl command line on first use, kept under the stack home, never committed.
The server certificate names every loopback address a node of the stack may listen on, so one
certificate serves PostgreSQL, ClickHouse, OpenBao and each Cassandra node.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from devstack.paths import service_dir
from devstack.process import run

# Every address a service of the stack listens on (Cassandra clusters use .0.x, .1.x and, for
# the replica tests' cluster, .2.x).
SERVER_ADDRESSES = [f"127.0.{net}.{host}" for net in (0, 1, 2) for host in (1, 2, 3)]
DAYS_VALID = 825


@dataclass(frozen=True)
class Certificates:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    # Certificate then key in one PEM file: the form Cassandra's PEM keystore reads.
    server_bundle: Path


def ensure_certificates() -> Certificates:
    """Create the CA and the server certificate if they do not exist yet; return their paths."""
    folder = service_dir("tls")
    certs = Certificates(
        ca_cert=folder / "ca.crt",
        server_cert=folder / "server.crt",
        server_key=folder / "server.key",
        server_bundle=folder / "server-bundle.pem",
    )
    ca_key = folder / "ca.key"
    if not (ca_key.exists() and certs.ca_cert.exists()):
        _generate_key(ca_key)
        run(
            [
                "openssl",
                "req",
                "-x509",
                "-new",
                "-key",
                ca_key,
                "-sha256",
                "-days",
                DAYS_VALID,
                "-subj",
                "/CN=cdc-pipeline local stack CA",
                "-out",
                certs.ca_cert,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            what="creating the local CA",
        )
        certs.server_cert.unlink(missing_ok=True)
    alt_names = ",".join(["DNS:localhost"] + [f"IP:{a}" for a in SERVER_ADDRESSES])
    names = folder / "server.names"  # the names it was signed for: a new address means a new one
    if not names.exists() or names.read_text() != alt_names:
        certs.server_cert.unlink(missing_ok=True)
        certs.server_bundle.unlink(missing_ok=True)
    if not (certs.server_cert.exists() and certs.server_key.exists()):
        _generate_key(certs.server_key)
        csr = folder / "server.csr"
        run(
            [
                "openssl",
                "req",
                "-new",
                "-key",
                certs.server_key,
                "-subj",
                "/CN=localhost",
                "-out",
                csr,
            ],
            what="creating the server certificate request",
        )
        extensions = folder / "server.ext"
        extensions.write_text(
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
            f"subjectAltName={alt_names}\n"
        )
        run(
            [
                "openssl",
                "x509",
                "-req",
                "-in",
                csr,
                "-CA",
                certs.ca_cert,
                "-CAkey",
                ca_key,
                "-CAcreateserial",
                "-days",
                DAYS_VALID,
                "-sha256",
                "-extfile",
                extensions,
                "-out",
                certs.server_cert,
            ],
            what="signing the server certificate",
        )
        csr.unlink()
        names.write_text(alt_names)
    if not certs.server_bundle.exists():
        certs.server_bundle.write_bytes(
            certs.server_key.read_bytes() + certs.server_cert.read_bytes()
        )
        os.chmod(certs.server_bundle, 0o600)
    # Servers that drop privileges (PostgreSQL, ClickHouse) need to read their own copy.
    return certs


def _generate_key(path: Path) -> None:
    # RSA 2048 in PKCS#8: the one key form every server here (including ClickHouse 18.16's
    # OpenSSL and Cassandra's PEM keystore) is known to read.
    run(
        [
            "openssl",
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            path,
        ],
        what=f"generating {path.name}",
    )
    os.chmod(path, 0o600)
