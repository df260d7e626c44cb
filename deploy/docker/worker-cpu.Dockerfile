# syntax=docker/dockerfile:1
# A CPU-only worker image for clusters without GPUs (the dev overlay): the
# same cd-worker without the cuda feature, so it needs no NVIDIA driver.
#
# Build from the repository root:
#   docker build -f deploy/docker/worker-cpu.Dockerfile -t cd-worker-cpu:0.1.0 .
#
# Base images are pinned by tag and digest; change tag and digest together
# (`docker buildx imagetools inspect IMAGE:TAG`).

FROM rust:1.95-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082 AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p cd-worker \
    && install -D -m 0755 target/release/cd-worker /out/cd-worker

FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
COPY --from=build /out/cd-worker /usr/local/bin/cd-worker
ENV HF_HOME=/var/cache/concept-depth/huggingface
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/cd-worker"]
