# payflow worker image: multi-stage, no compilers in the final image, non-root, pinned.
# Build: docker build -t payflow:0.1.0 .   Lint: make lint (hadolint)

# the full image has gcc: mypyc compiles the per-event stages (setup.py); both images keep
# Python in /usr/local, so the venv runs unchanged in the slim one
FROM python:3.11.7-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/payflow && /opt/payflow/bin/pip install pip==26.3
# dependencies first (pinned in setup.cfg), so code changes do not rebuild this layer
COPY setup.cfg setup.py pyproject.toml README.md ./
RUN mkdir payflow agents tables && touch payflow/__init__.py agents/__init__.py tables/__init__.py \
    && PAYFLOW_PURE_PYTHON=1 /opt/payflow/bin/pip install . \
    && /opt/payflow/bin/pip uninstall -y payflow
COPY payflow ./payflow
COPY agents ./agents
COPY tables ./tables
COPY sql ./sql
RUN /opt/payflow/bin/pip install --no-deps .

FROM python:3.11.7-slim-bookworm
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
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PAYFLOW_WEB_PORT', '6066'), timeout=4)"]
CMD ["payflow", "worker", "-l", "info"]
