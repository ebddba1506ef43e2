# The Driftline image: one image, three roles (topic initialiser, monitor,
# worker), chosen by the command. Build: docker build -t driftline .
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY driftline ./driftline
COPY streams ./streams
COPY retrain ./retrain
COPY registry ./registry
RUN pip install . \
    # An unprivileged user; the data directories exist so named volumes
    # mounted there inherit this ownership.
    && useradd --create-home --uid 10001 driftline \
    && mkdir -p /data/registry /data/monitor \
    && chown -R driftline:driftline /data

USER driftline
ENV DRIFTLINE_REGISTRY=/data/registry \
    DRIFTLINE_METRICS_ADDR=0.0.0.0
VOLUME ["/data/registry", "/data/monitor"]
ENTRYPOINT ["driftline"]
CMD ["--help"]
