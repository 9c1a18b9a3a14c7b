# syntax=docker/dockerfile:1.7
# Cascade fallback MF (ALS) service: `python -m fallback_mf` (FastAPI, ONE uvicorn worker).
# Build from the repo root:  docker build -f docker/fallback_mf.Dockerfile -t cascade/fallback-mf .
# Base image pinned by full tag; see docker/gateway.Dockerfile for pinning by digest.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# implicit 0.7.3 builds from source for cp311 (scikit-build-core, Cython, OpenMP): the
# compiler stays in this stage, only the built virtualenv reaches the runtime image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY docker/locks/mf.txt ./
# Hash-locked: docker/locks/mf.txt is '.[mf]' resolved under requirements.lock with
# the sha256 of every file (`python docker/hash_lock.py mf`); pip installs exactly those
# files or fails. The project itself is not installed: the image runs the sources from /app
# (feature_repo/ is found relative to them). `pip check`: the closure is complete.
RUN pip install --require-hashes --only-binary=:all: --no-binary=implicit -r mf.txt \
    && pip check \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE} AS runtime
# implicit's wheels link OpenMP (libgomp1); slim images lack it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 cascade \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin cascade
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
COPY cascade/ cascade/
COPY fallback_mf/ fallback_mf/
COPY docker/healthcheck.py docker/healthcheck.py
# One BLAS thread: implicit's recommend() runs in a thread pool off the event loop; more
# BLAS threads per process only fight the other replicas for the same cores.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OPENBLAS_NUM_THREADS=1 \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    HOME=/tmp \
    CASCADE_HOME=/var/lib/cascade \
    MF_HOST=0.0.0.0 \
    MF_PORT=8001
USER 10001:10001
EXPOSE 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py", "MF_PORT", "8001", "/healthz"]
CMD ["python", "-m", "fallback_mf"]
