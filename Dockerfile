# syntax=docker/dockerfile:1
#
# ticketfleet image: one image for every role (migrate, GPU workers, CPU chat worker, beat).
# The role is the command, e.g. `docker run IMAGE worker --lanes chat --gpus none`.
#
#   docker build -t ticketfleet .
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t ticketfleet:cpu .
#
# The CUDA runtime comes from the torch wheels (nvidia-* pip packages), so a slim Python base is
# enough; the host needs the NVIDIA driver and the NVIDIA Container Toolkit, nothing else.
FROM python:3.11-slim

# Where torch comes from. The default gives CUDA 12.4 wheels; pass .../whl/cpu for a CPU-only image.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/home/app/.cache/huggingface

# Unprivileged runtime user. Its HF cache directory is created here, owned by it, so that a named
# volume mounted on it (docker-compose.yml: hf-cache) starts out writable by the workers.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app --shell /usr/sbin/nologin app \
    && mkdir -p /home/app/.cache/huggingface \
    && chown -R app:app /home/app

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /app

# torch first, in its own layer: it is by far the largest and changes least often. Left unpinned on
# purpose: the index decides (the cu124 index's newest torch is 2.6.0, which transformers 5 needs).
# hadolint ignore=DL3013
RUN pip install torch --index-url "${TORCH_INDEX_URL}"

# The [x] globs copy README.md and alembic.ini when present and skip them otherwise (BuildKit allows a
# wildcard that matches nothing); setuptools only warns about a missing readme.
COPY pyproject.toml README.m[d] alembic.in[i] ./
COPY ticketfleet/ ticketfleet/
COPY db/ db/
COPY workers/ workers/
COPY connectors/ connectors/
COPY migrations/ migrations/

# Pin the torch just installed so that resolving the project's dependencies can never swap it for a
# different (e.g. default-index) build behind our back: an incompatibility fails the build instead.
# The code stays root-owned (read-only for the app user); /app itself is made writable so that
# `ticketfleet beat` can keep its schedule file in the working directory.
RUN pip freeze | grep -i '^torch==' > /tmp/torch-constraint.txt \
    && pip install --constraint /tmp/torch-constraint.txt . \
    && rm -rf /tmp/torch-constraint.txt build ./*.egg-info \
    && chown app:app /app

USER 10001:10001

ENTRYPOINT ["ticketfleet"]
CMD ["--help"]
