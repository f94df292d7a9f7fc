# syntax=docker/dockerfile:1
# vla-collector and the vla-api-sim traffic simulator, for configs/docker-compose.yml.
#   docker build -t vla-collector .
#   docker run --rm -p 4317:4317 -p 9464:9464 -p 8888:8888 vla-collector
#   docker run --rm vla-collector vla-api-sim --endpoint http://collector:4317 --scenario steady
# The default command runs the collector on /etc/vla/collector.yaml (configs/collector-docker.yaml,
# listening on 0.0.0.0; mount another file there to change it).

# --- build -------------------------------------------------------------------------------------
# The full Rust image: mimalloc's build compiles C. Every workspace member is copied because
# cargo reads them all; .dockerignore keeps target/ and .git out of the context.
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The cargo registry and target dir are build caches, so a rebuild recompiles only what changed;
# the binaries are copied out of the cache mount into the image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p vla-collector -p vla-sdk \
        --bin vla-collector --bin vla-api-sim \
 && install -D -m 0755 target/release/vla-collector /out/vla-collector \
 && install -D -m 0755 target/release/vla-api-sim /out/vla-api-sim

# --- run ---------------------------------------------------------------------------------------
FROM debian:bookworm-slim
# The collector needs no TLS roots or other packages: plain OTLP in, plain HTTP out.
RUN groupadd --system --gid 10001 vla \
 && useradd --system --uid 10001 --gid vla --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin vla
COPY --from=builder /out/vla-collector /out/vla-api-sim /usr/local/bin/
COPY configs/collector-docker.yaml /etc/vla/collector.yaml
COPY configs/customers.yaml /etc/vla/customers.yaml
USER vla:vla
# OTLP gRPC, OTLP HTTP, the collector's own telemetry (/metrics, /health, /ready), and the
# Prometheus scrape endpoint of its `prometheus` exporter.
EXPOSE 4317 4318 8888 9464
CMD ["vla-collector", "--config", "/etc/vla/collector.yaml"]
