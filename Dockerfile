# mserve's server image. Build: make image (or docker build -t mserve .); more extras with
# --build-arg EXTRAS=s3,gcs. Run: docker run -p 8000:8000 -v $PWD/models:/models:ro mserve
# It runs as a non-root user, with a read-only root filesystem (write only to /tmp: mount a
# tmpfs or an emptyDir there), and mserve as PID 1 handles SIGTERM itself (it drains).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# What serving needs: the core dependencies, and s3 for repositories on S3-compatible stores.
ARG EXTRAS=s3
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/mserve
COPY pyproject.toml README.md ./
COPY mserve ./mserve
COPY cli ./cli
COPY converters ./converters
RUN /opt/mserve/bin/pip install --no-cache-dir ".${EXTRAS:+[${EXTRAS}]}" \
    && /opt/mserve/bin/python -m compileall -q /opt/mserve

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin mserve
COPY --from=build /opt/mserve /opt/mserve
# Every serve flag has an MSERVE_* variable; these are the image's defaults. The admin API is
# off (a platform manages what is served): set MSERVE_NO_ADMIN=0 and MSERVE_ADMIN_TOKEN_FILE
# to turn it on.
ENV PATH=/opt/mserve/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/cache \
    MSERVE_REPO=/models \
    MSERVE_HOST=0.0.0.0 \
    MSERVE_PORT=8000 \
    MSERVE_GRPC_PORT=8001 \
    MSERVE_NO_ADMIN=1 \
    MSERVE_LOG_FORMAT=json
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; url = f\"http://127.0.0.1:{os.environ.get('MSERVE_PORT', '8000')}/v2/health/ready\"; sys.exit(0 if urllib.request.urlopen(url, timeout=2).status == 200 else 1)"]
ENTRYPOINT ["mserve", "serve"]
