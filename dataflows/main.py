"""The pipeline's entry point: `python -m bytewax.run dataflows.main`.

Configuration from $CDC_PIPELINE_CONFIG (default config/pipeline.json); a bad file stops the
job with one line naming the key and the problem (no traceback).
"""

from __future__ import annotations

import sys

from dataflows.config import load
from dataflows.flow import build
from operators.masking.errors import ConfigError

try:
    flow = build(load())
except ConfigError as error:
    sys.exit(f"configuration error: {error}")
