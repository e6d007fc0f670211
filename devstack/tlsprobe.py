"""Which TLS protocol a server really negotiates, from a handshake made for that purpose."""

from __future__ import annotations

import socket
import ssl

from devstack.certs import ensure_certificates


def client_context(*, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A verifying client context trusting the stack's CA; MAXIMUM caps the protocol (for tests)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ensure_certificates().ca_cert)
    if maximum is not None:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.maximum_version = maximum
    return context


def negotiated_protocol(host: str, port: int, *, maximum: ssl.TLSVersion | None = None) -> str:
    """The protocol name (e.g. "TLSv1.3") after a verified handshake; raises if refused."""
    context = client_context(maximum=maximum)
    with socket.create_connection((host, port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            return tls.version() or "-"
