"""OpenTelemetry spans of the pipeline's steps: one span per micro-batch per step.

Spans, with counts as attributes (never values):
- ``capture.decode`` (node, records, items, caught_up): the entries one poll of a node's
  cdc_raw found, decoded (idle polls make no span);
- ``row_images`` (events, operations, partitions, partitions_at_once): the read-back of a
  batch (partitions_at_once: read many rows per request, operators/image_batches.py);
- ``mask`` (operations): the masking of a batch;
- ``sink.write`` (destination, partition, operations, attempts): one spooled batch written to
  its destination, retries included.

Off unless configured (the API's no-op tracer: nearly free). `configure` is called by
dataflows/main.py from $CDC_TRACES:
- ``console``: spans as JSON on stdout (OpenTelemetry's ConsoleSpanExporter);
- ``file:<path>``: spans as JSON lines appended to <path>;
- ``otlp``: OTLP over gRPC to $OTEL_EXPORTER_OTLP_ENDPOINT. It needs the package
  ``opentelemetry-exporter-otlp-proto-grpc``, which is not a dependency of this project: the
  collector is the deployment's choice. Without the package, a clear error at start.

Spans of different steps are not linked into one trace: a change crosses steps as a Bytewax
item, which carries no trace context. Each span stands for one step's work on one batch, enough
to see where a batch's time goes.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)

__all__ = ["configure", "tracer"]

VARIABLE = "CDC_TRACES"
_NO_OP = trace.NoOpTracer()
_tracer: trace.Tracer = _NO_OP
_provider: TracerProvider | None = None


def tracer() -> trace.Tracer:
    """The pipeline's tracer (a no-op one unless `configure`d)."""
    return _tracer


class JsonLinesExporter(SpanExporter):
    """Each span as one JSON line appended to a file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(json.loads(span.to_json()), separators=(",", ":")) + "\n"
                        for span in spans)
        with self._lock, self._path.open("a") as out:
            out.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def _exporter(setting: str) -> SpanExporter:
    if setting == "console":
        return ConsoleSpanExporter()
    if setting.startswith("file:") and len(setting) > len("file:"):
        return JsonLinesExporter(Path(setting.removeprefix("file:")))
    if setting == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter,
            )
        except ImportError:
            raise ValueError(f"{VARIABLE}=otlp needs the package "
                             "opentelemetry-exporter-otlp-proto-grpc (not installed)") from None
        return OTLPSpanExporter()
    raise ValueError(f"{VARIABLE} must be console, file:<path> or otlp, not {setting!r}")


def configure(environ: Mapping[str, str] | None = None, *,
              exporter: SpanExporter | None = None) -> None:
    """Turn tracing on from $CDC_TRACES (or with EXPORTER, as tests do); unset: stay off.
    A bad value is a ValueError naming the variable."""
    global _tracer, _provider  # noqa: PLW0603 - one tracer per process, as OpenTelemetry's
    if exporter is None:
        setting = (environ if environ is not None else os.environ).get(VARIABLE, "")
        if not setting:
            return
        exporter = _exporter(setting)
    if _provider is not None:
        _provider.shutdown()
    _provider = TracerProvider(resource=Resource.create({"service.name": "cassandra-cdc"}))
    _provider.add_span_processor(BatchSpanProcessor(exporter))
    _tracer = _provider.get_tracer("cassandra_cdc")


def flush() -> None:
    """Export what is buffered (tests; the provider flushes by itself otherwise)."""
    if _provider is not None:
        _provider.force_flush()


def turn_off() -> None:
    """Back to the no-op tracer (tests)."""
    global _tracer, _provider  # noqa: PLW0603
    if _provider is not None:
        _provider.shutdown()
    _provider, _tracer = None, _NO_OP
