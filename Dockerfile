# mcp-platform as a container (README "Containers and several hosts").
# Build: docker build -t mcp-platform .   Run: see deploy/compose.yaml.

# --- build: the official Rust image compiles the release binaries -----------------------
FROM rust:1-slim-bookworm AS build
# make builds jemalloc, the server's allocator (tikv-jemalloc-sys).
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins -p mcp-platform -p demo-server \
 && install -m 0755 target/release/mcp-platform target/release/demo-server /usr/local/bin/

# --- runtime: slim Debian with Node (npx) and uv (uvx) for third-party MCP servers -------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl nodejs npm \
 && rm -rf /var/lib/apt/lists/*
COPY --from=ghcr.io/astral-sh/uv:latest /uv /uvx /usr/local/bin/
COPY --from=build /usr/local/bin/mcp-platform /usr/local/bin/demo-server /usr/local/bin/

# The image is read-only to the server: configuration comes from the environment
# (MCP__SECTION__KEY overrides, "env:NAME" secrets), state lives in /data only.
WORKDIR /app
COPY deploy/config.yaml deploy/servers_config.json /app/
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin mcp \
 && mkdir -p /data && chown mcp /data && chmod 0700 /data
ENV MCP_CONFIG_PATH=/app/config.yaml \
    MCP_SERVERS_CONFIG_PATH=/app/servers_config.json \
    HOME=/data \
    npm_config_cache=/data/.npm \
    UV_CACHE_DIR=/data/.cache/uv
VOLUME ["/data"]
USER mcp
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8000/readyz > /dev/null || exit 1
# serve drains on SIGTERM: running turns get shutdown.grace_seconds, then it exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/mcp-platform"]
CMD ["serve"]
