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

USER cdc
ENV CDC_PIPELINE_CONFIG=/etc/cdc/pipeline.json \
    PYTHONUNBUFFERED=1
# Exec form: Python itself is PID 1 and gets SIGTERM (the official Bytewax image starts it
# from a shell without exec, so the signal never arrives).
ENTRYPOINT ["python", "-m", "bytewax.run", "dataflows.main"]
