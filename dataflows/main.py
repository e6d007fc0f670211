"""The pipeline's entry point: `python -m bytewax.run dataflows.main`.

Configuration from $CDC_PIPELINE_CONFIG (default config/pipeline.json); a bad file stops the
job with one line naming the key and the problem (no traceback). Logs are JSON lines on stderr
(dataflows/logs.py; level from $CDC_LOG_LEVEL). With $CDC_HEALTH_PORT set, /healthz and /readyz
are served on it (dataflows/health.py); with $CDC_TRACES set, OpenTelemetry spans of each step
(connectors/tracing.py). The garbage collector runs with the pipeline's thresholds
(dataflows/collector.py).
"""

from __future__ import annotations

import sys

from connectors import tracing
from dataflows import health, logs
from dataflows.collector import tune_collector
from dataflows.config import load
from dataflows.flow import build
from operators.masking.errors import ConfigError

tune_collector()
try:
    logs.configure()
    tracing.configure()
    flow = build(load())
    health.serve_from_environment()
except (ConfigError, ValueError) as error:
    sys.exit(f"configuration error: {error}")
