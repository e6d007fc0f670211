"""Checks that a server does not answer a plaintext request on a TLS port."""

from __future__ import annotations

import socket


def plaintext_http_refused(host: str, port: int) -> bool:
    """True when a plain HTTP request gets no HTTP answer (closed, reset or a TLS alert)."""
    try:
        with socket.create_connection((host, port), timeout=5) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = raw.recv(64)
    except OSError:
        return True
    # Go's TLS listeners answer plain HTTP with a literal 400 "client sent an HTTP request to an
    # HTTPS server"; that is a refusal too: no request was served.
    return not answer.startswith(b"HTTP/") or b" 400 " in answer[:16]
