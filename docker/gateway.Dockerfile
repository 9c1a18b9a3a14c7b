# syntax=docker/dockerfile:1.7
# Cascade gateway: `python -m gateway` (FastAPI, ONE uvicorn worker; scale with replicas).
# Build from the repo root:  docker build -f docker/gateway.Dockerfile -t cascade/gateway .
#
# Base image pinned by full tag (Python patch release + Debian release). Pin by digest in CI
# with `docker buildx imagetools inspect python:3.11.13-slim-bookworm` once a registry is
# reachable (docs/deployment.md), e.g. --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---- deps: the pinned virtualenv, built once per pyproject/lock change ----------------------
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY docker/locks/gateway.txt ./
# Hash-locked: docker/locks/gateway.txt is '.[gateway]' resolved under requirements.lock with
# the sha256 of every file (`python docker/hash_lock.py gateway`); pip installs exactly those
# files or fails. The project itself is not installed: the image runs the sources from /app
# (feature_repo/ is found relative to them). `pip check`: the closure is complete.
RUN pip install --require-hashes --only-binary=:all: -r gateway.txt \
    && pip check \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

# ---- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 cascade \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin cascade \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/cascade /var/lib/cascade-keys
# The mount points of the named volumes (data; API keys) exist, owned by the service user: an
# empty named volume takes its ownership from the image (else root-owned, unwritable for 10001).
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
COPY cascade/ cascade/
COPY gateway/ gateway/
# the events contract and log client (POST /v1/events, served records)
COPY events/ events/
COPY two_tower/ two_tower/
COPY fallback_mf/ fallback_mf/
COPY feature_repo/ feature_repo/
COPY docker/healthcheck.py docker/healthcheck.py
# OPENBLAS/OMP at 1 thread: one process per core, scaled with replicas (STYLE.md).
# CASCADE_HOME is a volume (Feast registry, artifacts); HOME=/tmp so libraries that write a
# cache find a writable place under a read-only root filesystem.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OPENBLAS_NUM_THREADS=1 \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    HOME=/tmp \
    CASCADE_HOME=/var/lib/cascade \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py", "GATEWAY_PORT", "8000", "/healthz"]
CMD ["python", "-m", "gateway"]
