"""The pipeline's entry point: `python -m bytewax.run dataflows.main`.

Configuration from $CDC_PIPELINE_CONFIG (default config/pipeline.json); a bad file, or a
masking policy it names that does not load, stops the job with one line naming the key and
the problem (no traceback), before anything runs. SIGTERM stops the flow as Ctrl-C does: the
partitions close (the spools drain what they can within their close timeout; what is left
stays spooled). Without a handler, Python as PID 1 in a container ignored SIGTERM until the
pod's grace ran out and SIGKILL came, and outside one it died without closing anything.

Logs are JSON lines on stderr (dataflows/logs.py; level from $CDC_LOG_LEVEL). With
$CDC_HEALTH_PORT set, /healthz and /readyz are served on it (dataflows/health.py; not ready
until the flow runs); with $CDC_TRACES set, OpenTelemetry spans of each step
(connectors/tracing.py). The garbage collector runs with the pipeline's thresholds
(dataflows/collector.py).
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

from connectors import tracing
from connectors.audit_trail import AuditTrail
from connectors.health import HEALTH
from connectors.recovery_store import RecoveryStoreError
from dataflows import health, logs
from dataflows.collector import tune_collector
from dataflows.config import load, with_recovery_from_arguments
from dataflows.flow import build
from operators.masking.errors import ConfigError
from operators.masking.policy import load_policy


def _stop_once(number: int, frame: object) -> None:
    """The first SIGTERM stops the flow as Ctrl-C does; later ones are logged and ignored: a
    second KeyboardInterrupt inside a partition's close aborted the process, leaving the
    remaining partitions unclosed."""
    signal.signal(signal.SIGTERM, lambda *_: logging.getLogger(__name__).warning(
        "SIGTERM again: the flow is already closing its partitions"))
    signal.default_int_handler(number, frame)


def _check_audit_dir(directory: Path) -> None:
    """Open this process's audit file now (connectors/audit_trail.py): a folder it cannot
    write stops the start naming the key, not the flow at its first masked batch."""
    try:
        AuditTrail(directory).close_after_opening()
    except OSError as error:
        raise ConfigError("pipeline.audit_dir", f"{directory} cannot hold the audit trail "
                          f"({error.strerror or type(error).__name__})") from None


tune_collector()
signal.signal(signal.SIGTERM, _stop_once)
try:
    logs.configure()
    tracing.configure()
    settings = with_recovery_from_arguments(load(), sys.argv[1:])
    load_policy(settings.masking_policy)  # read again, once, when the first change comes
    _check_audit_dir(settings.audit_root)
    flow = build(settings)
    HEALTH.trouble(health.STARTUP, "the flow has not started yet")
    health.serve_from_environment()
except (ConfigError, ValueError) as error:
    sys.exit(f"configuration error: {error}")
except RecoveryStoreError as error:  # read at start: the ranges and nodes it holds state for
    sys.exit(f"recovery store error: {error}")
