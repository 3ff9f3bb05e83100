# prescore's container image, as deploy/cronjob.yaml runs it:
#   docker build -t registry.example.com/prescore:0.2.0 .
# Not built in this repository's CI (its machine has no container daemon and no base images);
# kept minimal so that what it does is plain to read. Build stage: the release binary from the
# locked dependency graph. Runtime: a slim Debian with CA certificates, a non-root user, the
# binary, and the configs and SQL the jobs name by relative path (working directory /app).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY sql sql
COPY benches benches
COPY tests tests
RUN cargo build --release --locked --bin prescore

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app prescore
WORKDIR /app
COPY --from=build /src/target/release/prescore /usr/local/bin/prescore
COPY configs configs
COPY sql sql
USER 10001
ENTRYPOINT ["/usr/local/bin/prescore"]
CMD ["--help"]
