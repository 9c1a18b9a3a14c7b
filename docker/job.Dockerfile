# syntax=docker/dockerfile:1.7
# Cascade offline jobs: `cascade data`, `cascade features apply|materialize`, `cascade train mf`,
# `cascade train two-tower`, `cascade export two-tower`, `cascade evaluate`; and the events
# consumer (`python -m events`: it needs Feast and pandas like the jobs).
# Build from the repo root:  docker build -f docker/job.Dockerfile -t cascade/job .
# Usage: docker run --rm cascade/job features materialize --dataset demo   (ENTRYPOINT is `cascade`)
#
# torch: requirements.lock pins the CPU build (torch==2.13.0+cpu) from PyTorch's CPU index, so
# by default the job trains on CPU. For GPU training nodes build with e.g.
#   --build-arg TORCH_SPEC=torch==2.13.0 --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
# (the lock's torch line is dropped and TORCH_SPEC pins it instead).
# Base image pinned by full tag; see docker/gateway.Dockerfile for pinning by digest.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
ARG TORCH_SPEC=torch==2.13.0+cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# implicit builds from source for cp311: the compiler stays in this stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml requirements.lock ./
# torch from PyTorch's index (its dependencies from PyPI), everything pinned by the lock.
RUN grep -v '^torch==' requirements.lock > /tmp/constraints.txt \
    && pip install -c /tmp/constraints.txt --index-url "${TORCH_INDEX_URL}" \
       --extra-index-url https://pypi.org/simple "${TORCH_SPEC}" \
    && pip install -c /tmp/constraints.txt '.[train,features,mf,events]' \
    && pip uninstall -y cascade \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE} AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 cascade \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin cascade \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/cascade /var/lib/cascade-keys
# The mount points of the named volumes (data; API keys) exist, owned by the service user: an
# empty named volume takes its ownership from the image (else root-owned, unwritable for 10001).
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
COPY cascade/ cascade/
COPY gateway/ gateway/
# `python -m events` (the consumer) runs from this image too (docker-compose, k8s/base/events.yaml)
COPY events/ events/
COPY docker/healthcheck.py docker/healthcheck.py
COPY two_tower/ two_tower/
COPY fallback_mf/ fallback_mf/
COPY feature_repo/ feature_repo/
# Owned by the job user: the train job refreshes it when the triton-models volume is mounted there.
COPY --chown=10001:10001 triton_models/ triton_models/
# A second copy of the model repository's sources: the jobs mount the shared model repository
# over /app/triton_models and refresh config.pbtxt / model.py there from this one.
COPY triton_models/ /opt/cascade/triton_models/
# The `cascade` console script, without installing the project into site-packages (the
# sources run from /app so feature_repo/ and triton_models/ sit where the code expects them).
RUN printf '#!/bin/sh\nexec python -m cascade.cli "$@"\n' > /opt/venv/bin/cascade \
    && chmod 0755 /opt/venv/bin/cascade
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    CASCADE_HOME=/var/lib/cascade \
    CASCADE_DATASET=demo
USER 10001:10001
ENTRYPOINT ["cascade"]
CMD ["--help"]
