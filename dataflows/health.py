"""Liveness and readiness of one pipeline process over HTTP, for Kubernetes probes, from what
the parts report to connectors/health.py.

With `CDC_HEALTH_PORT` set, `serve` answers on it (all interfaces; JSON bodies):
- `GET /healthz` (liveness): 200 unless a component failed fatally (503). Back-pressure is not
  a liveness failure: a pipeline waiting for a destination that is down must not be restarted
  in a loop, it catches up by itself.
- `GET /readyz` (readiness): 200 when every capture partition of this process has polled at
  least once within `stall_after` seconds and no destination is in trouble; otherwise 503,
  naming each check that is not ok. A process that owns no capture partition (more processes
  than Cassandra nodes) is ready while its destinations are. Before the flow runs (the
  processes still forming their cluster, recovery still loading) the `startup` check is in
  trouble: not ready, still live.

Bodies carry component names, states and error classes only, never values.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from connectors.health import HEALTH, Health

log = logging.getLogger(__name__)

PORT_VARIABLE = "CDC_HEALTH_PORT"
STARTUP = "startup"  # in trouble from the entry point until the flow builds its first parts


class _Handler(BaseHTTPRequestHandler):
    health: Health = HEALTH

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        live, ready, body = self.health.report()
        if self.path == "/healthz":
            status = 200 if live else 503
        elif self.path == "/readyz":
            status = 200 if ready else 503
        else:
            status, body = 404, {"error": "not found: /healthz or /readyz"}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        return  # probes every few seconds: not worth a log line each


def serve(port: int, health: Health = HEALTH, host: str = "0.0.0.0") -> ThreadingHTTPServer:  # noqa: S104 - probes come from the node
    """Answer /healthz and /readyz on PORT from a daemon thread; the server (to shut down)."""
    handler = type("Handler", (_Handler,), {"health": health})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server


def serve_from_environment(environ: dict[str, str] | None = None) -> ThreadingHTTPServer | None:
    """`serve` on $CDC_HEALTH_PORT if it is set; a port already taken (another process of a
    local multi-process run) is logged, not fatal."""
    value = (environ if environ is not None else os.environ).get(PORT_VARIABLE)
    if not value:
        return None
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ValueError(f"{PORT_VARIABLE} must be a port number (1-65535), not {value!r}")
    try:
        return serve(port)
    except OSError as error:
        log.warning("health endpoints not served: port %d: %s", port, error.strerror)
        return None
