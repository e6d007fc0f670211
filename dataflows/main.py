"""The pipeline's entry point: `python -m bytewax.run dataflows.main`.

Configuration from $CDC_PIPELINE_CONFIG (default config/pipeline.json); a bad file stops the
job with one line naming the key and the problem (no traceback). Logs are JSON lines on stderr
(dataflows/logs.py; level from $CDC_LOG_LEVEL).
"""

from __future__ import annotations

import sys

from dataflows import logs
from dataflows.config import load
from dataflows.flow import build
from operators.masking.errors import ConfigError

try:
    logs.configure()
    flow = build(load())
except (ConfigError, ValueError) as error:
    sys.exit(f"configuration error: {error}")
