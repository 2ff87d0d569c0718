# ccrelay container image: the relay plus the pinned Claude Code CLI.
#
#   docker build -t ccrelay .
#   docker run -d --name ccrelay -p 7878:7878 -v ccrelay-data:/data \
#     -v "$PWD":/work -e CCRELAY_OWNER_KEY="$(cat ~/.ssh/id_ed25519.pub)" \
#     -e ANTHROPIC_API_KEY ccrelay
#
# Serves TLS with a self-signed certificate kept in /data (its fingerprint is in
# `docker logs`); pass `--insecure-plaintext` as the command to serve plain ws://
# instead (only behind a TLS proxy or on a private network). docs/deploy.md has
# the details; scripts/container-steps runs the same build steps on a host.

ARG RUST_VERSION=1.95
ARG NODE_VERSION=20

# ---- build: the release binaries ----------------------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# The whole source tree (.dockerignore keeps target/ and node_modules out);
# --locked: exactly the dependency versions of Cargo.lock.
COPY . .
RUN cargo build --release --locked --bin ccrelay --bin ccrelay-mock-agent

# ---- the pinned Claude Code CLI, from its committed lockfile -------------------
FROM node:${NODE_VERSION}-bookworm-slim AS claude
WORKDIR /opt/claude-cli
COPY tools/claude-cli/package.json tools/claude-cli/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error \
 && npm cache clean --force

# ---- runtime: slim Debian with Node, the CLI and the relay ---------------------
FROM node:${NODE_VERSION}-bookworm-slim AS runtime
# ca-certificates: the CLI talks to the Anthropic API over TLS; git and
# openssh-client: tools the agent runs in the workdir; curl: the HEALTHCHECK;
# tini: reaps the agent's orphaned children and forwards SIGTERM.
# Versions come from the pinned Debian release of the base image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl git openssh-client tini \
 && rm -rf /var/lib/apt/lists/*

# An unprivileged user; its home holds the CLI's own state (~/.claude).
RUN groupadd --system --gid 10001 ccrelay \
 && useradd --system --uid 10001 --gid ccrelay --create-home --home-dir /home/ccrelay \
      --shell /usr/sbin/nologin ccrelay \
 && mkdir -p /data /work /home/ccrelay/.claude \
 && chown ccrelay:ccrelay /data /work /home/ccrelay/.claude \
 && chmod 0700 /data

COPY --from=claude /opt/claude-cli /opt/claude-cli
COPY --from=build /src/target/release/ccrelay /src/target/release/ccrelay-mock-agent /usr/local/bin/
COPY deploy/docker/entrypoint.sh /usr/local/bin/ccrelay-entrypoint
COPY deploy/docker/healthcheck.sh /usr/local/bin/ccrelay-healthcheck

ENV PATH=/opt/claude-cli/node_modules/.bin:$PATH \
    HOME=/home/ccrelay \
    CCRELAY_LISTEN=0.0.0.0:7878 \
    CCRELAY_DATA_DIR=/data \
    CCRELAY_WORKDIR=/work \
    CCRELAY_AUTHORIZED_KEYS=/data/authorized_keys \
    CCRELAY_LOG_FORMAT=json \
    DISABLE_AUTOUPDATER=1

# Numeric, so that runtimes checking runAsNonRoot can tell it is not root.
USER 10001:10001
WORKDIR /work
VOLUME ["/data"]
EXPOSE 7878
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/ccrelay-healthcheck"]
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/ccrelay-entrypoint"]
# TLS by default; replace with `--insecure-plaintext` for plain ws:// (explicitly).
CMD ["--tls-self-signed"]
