# The pipeline's image: `python -m bytewax.run dataflows.main`, configured by CDC_PIPELINE_CONFIG.
# (Not built in CI: no Docker engine there; the same commands run in scripts/bootstrap.)
FROM python:3.11-slim-bookworm

RUN useradd --create-home --uid 10001 cdc
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY connectors/ connectors/
COPY operators/ operators/
COPY dataflows/ dataflows/
RUN pip install --no-cache-dir .

# What the pipeline writes goes under /var/lib/cdc (the user's own): Bytewax writes its
# dataflow.json (with BYTEWAX_DATAFLOW_API_ENABLED) to the working directory unless told, and
# /app is root's. Point dead_letter_dir, spool_dir and audit_dir there too (docs/configuration.md):
# their default is beside the configuration file, in /etc/cdc, which is not writable.
RUN mkdir -p /var/lib/cdc && chown cdc:cdc /var/lib/cdc
USER cdc
WORKDIR /var/lib/cdc
ENV CDC_PIPELINE_CONFIG=/etc/cdc/pipeline.json \
    BYTEWAX_DATAFLOW_API_CACHE_PATH=/tmp \
    PYTHONUNBUFFERED=1
# Exec form: Python itself is PID 1 and gets SIGTERM (the official Bytewax image starts it
# from a shell without exec, so the signal never arrives).
ENTRYPOINT ["python", "-m", "bytewax.run", "dataflows.main"]
