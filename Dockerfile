# syntax=docker/dockerfile:1

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# No database is reachable at build time; sqlx macros must not try one.
ENV SQLX_OFFLINE=true
# target/ lives in a cache mount, which is gone after this RUN, so the binary
# is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin brain \
    && cp target/release/brain /usr/local/bin/brain

# Same Debian release as the builder, so the glibc the binary links against
# matches. Not distroless: the compose healthcheck needs curl.
FROM debian:12-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --user-group --uid 10001 \
    --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin brain
# The user run_command runs every program as (BRAIN_COMMAND_USER). The serve runs as 10001,
# which cannot switch users, so commands are refused unless the container runs as root
# (`--user 0`, and CAP_SYS_ADMIN for the namespaces): see the README's "Containment: commands
# in a sandbox".
RUN useradd --system --user-group --uid 10002 \
    --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin brain-cmd
COPY --from=builder /usr/local/bin/brain /usr/local/bin/brain
# Numeric, so runtimes enforcing runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["brain"]
CMD ["serve"]
