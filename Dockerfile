# syntax=docker/dockerfile:1
# Signet operator image: `docker build -t signet:0.1.0 .`
# The build stage installs the locked dependencies (requirements.lock: every version pinned,
# every file's sha256 checked; `make lock` regenerates it) and then the package alone into a
# virtualenv; the runtime stage copies only that virtualenv and runs as the non-root uid
# 65532 (the chart's default).

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/signet
ENV PATH=/opt/signet/bin:$PATH
WORKDIR /src
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip install --no-cache-dir --no-deps .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="signet" \
      org.opencontainers.image.description="Kubernetes operator issuing X.509, SPIFFE and OpenSSH certificates signed by a CA key in Cloud KMS" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 65532 signet \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin signet
COPY --from=build /opt/signet /opt/signet
ENV PATH=/opt/signet/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080 9402
ENTRYPOINT ["signet"]
CMD ["run"]
