# syntax=docker/dockerfile:1
# Ferrule's container image (docs/deploy.md): a builder stage makes the abi3 wheel exactly as
# `make wheels` does (maturin + zig, manylinux_2_17), a slim runtime stage pip-installs it with the
# locked runtime dependencies and runs it as a non-root user.
#
#   docker build -t ferrule:0.1.0 .
#   docker run --rm -p 8766:8766 -e FERRULE_ACCESS_KEY=... -e FERRULE_UPSTREAM_API_KEY=... ferrule:0.1.0
#
# Builds on linux/amd64 and linux/arm64 alike (the wheel is for the build platform's CPU).

ARG PYTHON_VERSION=3.11

FROM rust:1.95-slim-bookworm AS builder
# Python for maturin (Debian bookworm's python3 is 3.11); the versions are those of
# requirements-dev.lock.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir maturin==1.16.0 ziglang==0.17.1
ENV PATH=/opt/build/bin:$PATH
WORKDIR /src
COPY Cargo.toml Cargo.lock pyproject.toml README.md ./
COPY rust rust
COPY python python
# --locked: the crates of Cargo.lock, nothing newer. Output: dist/ferrule-<v>-cp310-abi3-
# manylinux_2_17_<arch>.whl, the name `make wheels` gives.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    maturin build --release --locked --zig --compatibility manylinux_2_17 -o dist \
 && ls dist/ferrule-*-cp310-abi3-*manylinux_2_17_*.whl

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
# A fixed uid/gid, so Kubernetes' runAsNonRoot can check it (deploy/k8s/deployment.yaml).
RUN groupadd --system --gid 10001 ferrule \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/ferrule \
      --shell /usr/sbin/nologin ferrule \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/ferrule
COPY requirements-dev.lock /tmp/requirements-dev.lock
COPY --from=builder /src/dist/ /tmp/dist/
# The wheel with the postgres extra (FERRULE_DATABASE_URL), every dependency at its locked version.
RUN wheel="$(ls /tmp/dist/ferrule-*-cp310-abi3-*.whl)" \
 && pip install --no-cache-dir --disable-pip-version-check -c /tmp/requirements-dev.lock \
      "${wheel}[postgres]" \
 && rm -rf /tmp/dist /tmp/requirements-dev.lock \
 && ferrule version

# Inside the container Ferrule must listen on 0.0.0.0 to be reachable through the published port.
# Ferrule refuses a non-loopback bind without an access key, so this image starts only when
# FERRULE_ACCESS_KEY (16+ characters) is given: nobody gets an open proxy by accident.
ENV FERRULE_HOST=0.0.0.0 \
    FERRULE_PORT=8766 \
    FERRULE_DATA_DIR=/var/lib/ferrule \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/ferrule
VOLUME ["/var/lib/ferrule"]
EXPOSE 8766
# Liveness only (the worker answers); readiness (/health/readiness) is for load balancers.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('FERRULE_PORT', '8766') + '/health/liveness', timeout=2)"]
# SIGTERM (docker stop, Kubernetes): Ferrule stops accepting, finishes in-flight requests within
# FERRULE_SHUTDOWN_TIMEOUT and flushes the ledger.
STOPSIGNAL SIGTERM
ENTRYPOINT ["ferrule"]
CMD ["serve"]
