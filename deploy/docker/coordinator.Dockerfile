# syntax=docker/dockerfile:1
# The coordinator image: no CUDA, no model code, runs as a non-root user.
#
# Build from the repository root (the build context must hold the workspace):
#   docker build -f deploy/docker/coordinator.Dockerfile -t cd-coordinator:0.1.0 .
#
# Base images are pinned by tag and digest so a rebuild uses the same bytes.
# To move to a newer patch release, look the digest up with
# `docker buildx imagetools inspect IMAGE:TAG` and change tag and digest together.

FROM rust:1.95-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082 AS build
WORKDIR /src
COPY . .
# The cache mounts keep crates.io downloads and compiled dependencies between
# builds; the binary is copied out because the target dir is a cache.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p cd-coordinator \
    && install -D -m 0755 target/release/cd-coordinator /out/cd-coordinator

# distroless/cc: glibc, libgcc and CA certificates (for https:// S3
# endpoints), no shell, no package manager; "nonroot" is uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
COPY --from=build /out/cd-coordinator /usr/local/bin/cd-coordinator
USER 65532:65532
# gRPC for workers, HTTP for /healthz, /readyz and /status.
EXPOSE 50051 8080
ENTRYPOINT ["/usr/local/bin/cd-coordinator"]
