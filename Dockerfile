# payflow worker image: multi-stage, no compilers in the final image, non-root, pinned.
# Build: docker build --build-arg VCS_REF=$(git rev-parse HEAD) -t payflow:0.1.0 .
# Lint:  make lint (hadolint)

# Both stages are CPython 3.11.15 on Debian bookworm, pinned by the multi-arch index digest
# (the tag says which release it is; the digest is what is pulled). Update both together.
# The full image has gcc: mypyc compiles the per-event stages (setup.py); both images keep
# Python in /usr/local, so the venv runs unchanged in the slim one.
FROM python:3.11.15-bookworm@sha256:a8f8fbe1a0edc9e4dddafa64ba73f7e04be7be5ebc23f332362e779e0a2e4e52 AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/payflow && /opt/payflow/bin/pip install pip==26.3
# dependencies first, exactly as locked and hash-checked (requirements/lock-image.txt: the
# runtime and the simulator, no test tools), so code changes do not rebuild this layer
COPY requirements/lock-image.txt ./requirements/
RUN /opt/payflow/bin/pip install --require-hashes --no-deps -r requirements/lock-image.txt
COPY setup.cfg setup.py pyproject.toml README.md ./
COPY payflow ./payflow
COPY agents ./agents
COPY tables ./tables
COPY sql ./sql
RUN /opt/payflow/bin/pip install --no-deps .

FROM python:3.11.15-slim-bookworm@sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3
ARG VERSION=0.1.0
ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="payflow" \
      org.opencontainers.image.description="Streaming payment pipeline (Faust on Kafka): card data masked on first touch, every payment counted once, PII-free rows in BigQuery" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.source="https://github.com/payflow/payflow" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.15-slim-bookworm" \
      org.opencontainers.image.base.digest="sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3"
ENV PATH=/opt/payflow/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PAYFLOW_PRODUCTION=true \
    PAYFLOW_DATA_DIR=/var/lib/payflow \
    PAYFLOW_LOG_FORMAT=json \
    PAYFLOW_WEB_PORT=6066 \
    PAYFLOW_SQL_DIR=/app/sql
RUN groupadd --system --gid 10001 payflow \
    && useradd --system --uid 10001 --gid payflow --home-dir /var/lib/payflow --no-create-home payflow \
    && mkdir -p /var/lib/payflow /app \
    && chown payflow:payflow /var/lib/payflow
COPY --from=build /opt/payflow /opt/payflow
COPY --chown=root:root sql /app/sql
WORKDIR /app
USER 10001:10001
EXPOSE 6066
VOLUME ["/var/lib/payflow"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('PAYFLOW_WEB_PORT', '6066'), timeout=4)"]
CMD ["payflow", "worker", "-l", "info"]
